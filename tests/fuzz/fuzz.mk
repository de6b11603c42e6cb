# tests/fuzz/fuzz.mk: the libFuzzer targets (included from Makefile.am).
#
# make fuzz builds tests/fuzz/fuzz_<name> for every name in FUZZ_NAMES
# with clang -fsanitize=fuzzer,address,undefined, over a copy of the
# library compiled with -fsanitize=fuzzer-no-link,address,undefined into
# tests/fuzz/obj/ (never mixed with the objects of the normal build).
# Only make fuzz needs clang (FUZZ_CC). The replay programs of make check
# are declared in Makefile.am. See tests/fuzz/README.md.

FUZZ_NAMES = http ws jwt config redis raft signaling game chat game_msg \
	raft_frame sig_cluster
FUZZ_CC = clang
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_CFLAGS = -g -O1 -std=gnu11 $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_CPPFLAGS = -I$(top_builddir) -I$(srcdir)/tests/fuzz \
	-I$(top_srcdir)/roles/signaling -I$(top_srcdir)/roles/game \
	-I$(top_srcdir)/roles/chat $(DEFS) $(AM_CPPFLAGS)
FUZZ_OBJDIR = tests/fuzz/obj
FUZZ_LIB = $(FUZZ_OBJDIR)/libp2pmesh-fuzz.a
FUZZ_LIB_SRCS = $(libp2pmesh_a_SOURCES) $(nodist_libp2pmesh_a_SOURCES)
FUZZ_LIB_OBJS = $(FUZZ_LIB_SRCS:%.c=$(FUZZ_OBJDIR)/%.o)
FUZZ_BINS = $(FUZZ_NAMES:%=tests/fuzz/fuzz_%)
FUZZ_HDRS = $(noinst_HEADERS:%=$(srcdir)/%) $(srcdir)/tests/fuzz/fuzz.h

fuzz: $(FUZZ_BINS)
.PHONY: fuzz

# Static pattern rules: the library sources (the srcdir ones and the
# generated web assets, both found through VPATH) and the targets.
$(FUZZ_LIB_OBJS): $(FUZZ_OBJDIR)/%.o: %.c $(FUZZ_HDRS) config.h
	@$(MKDIR_P) $(@D)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<
$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	rm -f $@
	$(AR) $(ARFLAGS) $@ $(FUZZ_LIB_OBJS)
	$(RANLIB) $@
$(FUZZ_BINS): tests/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB) $(FUZZ_HDRS)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ \
		$< $(FUZZ_LIB) $(DEPS_LIBS)

clean-fuzz:
	rm -f $(FUZZ_BINS) $(FUZZ_LIB) $(FUZZ_LIB_OBJS)
.PHONY: clean-fuzz

FUZZ_DIST = tests/fuzz/fuzz.mk tests/fuzz/fuzz.h tests/fuzz/replay.c \
	tests/fuzz/run.sh tests/fuzz/README.md \
	$(FUZZ_NAMES:%=tests/fuzz/fuzz_%.c) tests/fuzz/corpus \
	tests/fuzz/regressions
