# Makefile for the anonymize extension (PGXS)
#
# Every src/*.c is part of the module; the install and upgrade scripts are
# the anonymize--*.sql at the top (sql/ and expected/ hold the regression
# tests only).  Regression tests are listed in the order they run (setup
# first), isolation specs and TAP tests are picked up from specs/*.spec and
# t/*.pl.  The command-line client pg_anonymize has its own cli/Makefile,
# driven from here.
#
# make installcheck runs the regression and isolation suites each in a
# temporary instance (tmp_check, tmp_check_iso) configured by test.conf,
# made with the binaries of bindir, where `make install` put the extension;
# the TAP tests make their own nodes.  EXISTING_SERVER=1 runs the two suites
# against the server PGHOST and PGPORT name instead (tools/valgrind.sh).

MODULE_big = anonymize
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

EXTENSION = anonymize
DATA = $(sort $(wildcard anonymize--*.sql))
PGFILEDESC = "anonymize - GDPR erasure for a contact-centre archive"

# each area appends its tests on its own line
REGRESS_FOUNDATION = setup normalize mask request targets
REGRESS_RUN = run run_timezone run_held run_partitioned
REGRESS_SHAPES = targets_checks run_inheritance run_shapes
REGRESS_HOOKS = hooks hooks_done
REGRESS_HARDENING = hostile privileges
REGRESS_OPERATIONS = retention
REGRESS_LEDGER = ledger
REGRESS_PROBE = run_probe
REGRESS = $(REGRESS_FOUNDATION) $(REGRESS_RUN) $(REGRESS_SHAPES) $(REGRESS_HOOKS) $(REGRESS_HARDENING) $(REGRESS_OPERATIONS) $(REGRESS_LEDGER) $(REGRESS_PROBE)
REGRESS_OPTS = --inputdir=. --load-extension=anonymize
ISOLATION := $(sort $(basename $(notdir $(wildcard specs/*.spec))))
ISOLATION_OPTS = --load-extension=anonymize
ifndef EXISTING_SERVER
REGRESS_OPTS += --temp-instance=./tmp_check --temp-config=$(srcdir)/test.conf
ISOLATION_OPTS += --temp-instance=./tmp_check_iso --temp-config=$(srcdir)/test.conf
endif
# the databases of the suites: UTF8, C locale
ENCODING = UTF8
NO_LOCALE = 1
ifneq ($(wildcard t/*.pl),)
TAP_TESTS = 1
endif

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG ?= pg_config

# PostgreSQL 15 to 18 (15, 17 and 18 tested); any other stops here with a
# message rather than with a compiler error
ANONYMIZE_PG_VERSION := $(shell $(PG_CONFIG) --version 2>/dev/null)
ANONYMIZE_PG_MAJOR := $(shell echo '$(ANONYMIZE_PG_VERSION)' | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')
ifeq ($(ANONYMIZE_PG_VERSION),)
$(error cannot run $(PG_CONFIG): set PG_CONFIG to the pg_config of PostgreSQL 15, 16, 17 or 18)
endif
ifeq ($(filter $(ANONYMIZE_PG_MAJOR),15 16 17 18),)
$(error anonymize supports PostgreSQL 15, 16, 17 and 18, but $(PG_CONFIG) is $(ANONYMIZE_PG_VERSION))
endif

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_anonymize: `make` builds cli/pg_anonymize, `make install` puts it in
# bindir (cli/Makefile)
all: all-cli
install: install-cli
uninstall: uninstall-cli
clean: clean-cli

all-cli install-cli uninstall-cli clean-cli:
	$(MAKE) -C cli PG_CONFIG='$(PG_CONFIG)' $(patsubst %-cli,%,$@)

.PHONY: all-cli install-cli uninstall-cli clean-cli
