# bash completion for sio(1): commands, options, address prefixes, and files
# or directories where an option takes one. Installed by make install into
# share/bash-completion/completions/sio.
_sio()
{
	local cur prev cmd opts
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "keygen pubkey fingerprint listen connect --help --version" -- "$cur"))
		return
	fi
	cmd=${COMP_WORDS[1]}
	case $prev in
	-i) COMPREPLY=($(compgen -d -- "$cur")); return ;;
	-r | -f | --psk-file | --passphrase-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	--channel | --timeout | --dead | --rekey) return ;;
	esac
	case $cmd in
	keygen) opts="-i -f -C --passphrase-file" ;;
	pubkey) opts="-i -f" ;;
	fingerprint) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	listen | connect)
		opts="-i -r --psk-file --passphrase-file --agent --no-agent -v --lines --channel --send-only --recv-only --timeout --dead --rekey --stats --progress --multi -q"
		[ "$cmd" = listen ] && opts="$opts -k --keep-open"
		case $cur in
		-*) ;;
		unix:* | unixgram:*)
			local p=${cur#*:}
			COMPREPLY=($(compgen -f -P "${cur%%:*}:" -- "$p"))
			return ;;
		*)
			COMPREPLY=($(compgen -W "udp: tcp: unix: unixgram:" -- "$cur"))
			compopt -o nospace 2>/dev/null
			return ;;
		esac ;;
	*) return ;;
	esac
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _sio sio
