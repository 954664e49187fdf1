# Makefile for the anonymize extension (PGXS)
#
# Every src/*.c is part of the module; regression tests are listed in the
# order they run (setup first), isolation specs and TAP tests are picked up
# from specs/*.spec and t/*.pl.

MODULE_big = anonymize
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

EXTENSION = anonymize
DATA = $(sort $(wildcard sql/anonymize--*.sql))
PGFILEDESC = "anonymize - GDPR erasure for a contact-centre archive"

# each area appends its tests on its own line
REGRESS_FOUNDATION = setup normalize mask request targets
REGRESS_RUN = run run_timezone run_held run_partitioned
REGRESS_HOOKS =
REGRESS_HARDENING = hostile privileges
REGRESS_OPERATIONS =
REGRESS = $(REGRESS_FOUNDATION) $(REGRESS_RUN) $(REGRESS_HOOKS) $(REGRESS_HARDENING) $(REGRESS_OPERATIONS)
REGRESS_OPTS = --inputdir=. --load-extension=anonymize
ISOLATION := $(sort $(basename $(notdir $(wildcard specs/*.spec))))
ISOLATION_OPTS = --load-extension=anonymize
ifneq ($(wildcard t/*.pl),)
TAP_TESTS = 1
endif

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
