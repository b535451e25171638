#!/usr/bin/env bash
# The documentation of sio does not drift from the program: the options of
# `sio --help`, of the README's option list and of the man page sio(1) are
# the same set; the man page renders without warnings; the bash completion
# offers every option; `make install PREFIX=DIR` installs sio, its man page
# and its completion into DIR even though build/ was configured with
# another prefix.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
src=$SIO_SOURCE_DIR

# "  -k, --keep-open  ..." / "  --lines  ..." -> one option per line, sorted
opts_of_list() { grep -oE '^  (-[a-zA-Z](, --[a-z-]+)?|--[a-z-]+)' | tr -d ' ' | tr ',' '\n' | sort -u; }
"$SIO" --help | sed -n '/^OPTIONS/,/^$/p' | opts_of_list >"$T/help.opts"
awk '/^## The sio command/ { s = 1 } s && /^OPTIONS:/ { o = 1 } o && /^```/ { exit } o' "$src/README.md" |
	opts_of_list >"$T/readme.opts"
# man: ".It Fl k , Fl -keep-open" -> -k --keep-open
sed -n '/^\.Sh OPTIONS/,/^\.Sh /p' "$src/man/sio.1" | grep '^\.It Fl' |
	grep -oE 'Fl -?[a-zA-Z][a-z-]*' | sed 's/^Fl /-/' | sort -u >"$T/man.opts"
check "help lists options ($(wc -l <"$T/help.opts"))" test "$(wc -l <"$T/help.opts")" -ge 14
check "README lists the options of sio --help ($(diff "$T/help.opts" "$T/readme.opts" | tr '\n' ' '))" \
	cmp -s "$T/help.opts" "$T/readme.opts"
check "sio(1) lists the options of sio --help ($(diff "$T/help.opts" "$T/man.opts" | tr '\n' ' '))" \
	cmp -s "$T/help.opts" "$T/man.opts"
if command -v groff >/dev/null; then
	groff -mandoc -Tutf8 -ww -z "$src/man/sio.1" >"$T/groff.err" 2>&1
	check "sio(1) renders without warnings ($(head -c 300 "$T/groff.err"))" test ! -s "$T/groff.err"
fi

# completion: COMP_WORDS as bash would give them
complete_words() { # WORD... (the last one is being completed)
	bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _sio; printf "%s\n" "${COMPREPLY[@]}"' \
		_ "$src/completion/sio.bash" "$@"
}
check_eq "completion: commands" "listen" "$(complete_words sio li)"
check_eq "completion: address prefixes" "udp: unix: unixgram:" "$(complete_words sio connect u | sort | tr '\n' ' ' | sed 's/ $//')"
complete_words sio listen - | sort -u >"$T/compl.opts"
check "completion offers every option of listen ($(comm -23 "$T/help.opts" "$T/compl.opts" | tr '\n' ' '))" \
	test -z "$(comm -23 "$T/help.opts" "$T/compl.opts")"

# make install PREFIX=DIR with an existing build directory
if command -v make >/dev/null && [ -f "$SIO_BINARY_DIR/CMakeCache.txt" ]; then
	make -s -C "$src" install BUILD="$SIO_BINARY_DIR" PREFIX="$T/prefix" JOBS=1 >"$T/make.out" 2>&1
	check_eq "make install PREFIX=DIR: exit ($(tail -3 "$T/make.out"))" 0 "$?"
	check "installed sio into DIR/bin" test -x "$T/prefix/bin/sio"
	check "installed sio(1) into DIR/share/man/man1" test -f "$T/prefix/share/man/man1/sio.1"
	check "installed the completion" test -f "$T/prefix/share/bash-completion/completions/sio"
	check_eq "installed sio runs" "$("$SIO" --version)" "$("$T/prefix/bin/sio" --version)"
fi
finish
