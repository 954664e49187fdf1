# Makefile for the anonymize extension (PGXS)
#
# Every src/*.c is part of the module; regression tests are listed in the
# order they run (setup first), isolation specs and TAP tests are picked up
# from specs/*.spec and t/*.pl.

MODULE_big = anonymize
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

EXTENSION = anonymize
DATA = $(sort $(wildcard sql/anonymize--*.sql) $(wildcard anonymize--*.sql))
PGFILEDESC = "anonymize - GDPR erasure for a contact-centre archive"

# each area appends its tests on its own line
REGRESS_FOUNDATION = setup normalize mask request targets
REGRESS_RUN = run run_timezone run_held run_partitioned
REGRESS_HOOKS = hooks hooks_done
REGRESS_HARDENING = hostile privileges
REGRESS_OPERATIONS = retention
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

# pg_anonymize, the command-line client: a plain libpq program, built here
# by its own rule because PGXS's PROGRAM cannot share a Makefile with
# MODULE_big.  `make` builds it next to the module, `make install` puts it
# in PostgreSQL's bindir.
PGA_SRCS = $(sort $(wildcard cli/*.c))
PGA_CFLAGS = -O2 -g -std=gnu99 -Wall -Wextra -Werror
PGA_INCLUDEDIR := $(shell $(PG_CONFIG) --includedir)
PGA_LIBDIR := $(shell $(PG_CONFIG) --libdir)

all: pg_anonymize

pg_anonymize: $(PGA_SRCS) cli/pg_anonymize.h
	$(CC) $(PGA_CFLAGS) -I$(PGA_INCLUDEDIR) -o $@ $(PGA_SRCS) -L$(PGA_LIBDIR) -lpq

install: install-pg_anonymize
install-pg_anonymize: pg_anonymize
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) pg_anonymize '$(DESTDIR)$(bindir)/pg_anonymize'

uninstall: uninstall-pg_anonymize
uninstall-pg_anonymize:
	rm -f '$(DESTDIR)$(bindir)/pg_anonymize'

clean: clean-pg_anonymize
clean-pg_anonymize:
	rm -f pg_anonymize

.PHONY: install-pg_anonymize uninstall-pg_anonymize clean-pg_anonymize
