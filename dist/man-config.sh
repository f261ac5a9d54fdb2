#!/bin/sh
# Build hikyaku.yaml(5) from the settings table itself (`hikyaku config
# reference`, the source of docs/CONFIG.md too): a man page's NAME
# section first, the reference's tables as definition lists (wide tables
# do not fit a terminal), then pandoc. Run by meson at build time.
#   dist/man-config.sh HIKYAKU PANDOC VERSION OUTPUT
set -eu
hikyaku=$1 pandoc=$2 version=$3 out=$4
{
	printf -- '---\ntitle: HIKYAKU.YAML\nsection: 5\nheader: hikyaku manual\nfooter: hikyaku %s\n---\n\n' "$version"
	printf '# NAME\n\nhikyaku.yaml - configuration file of the hikyaku mail transfer agent\n\n'
	printf '# DESCRIPTION\n\n'
	"$hikyaku" config reference | awk '
		NR == 1 && /^# / { next }      # the title: NAME above says it
		/^<!--/, /-->$/ { next }       # "generated from", for docs/
		/^\|-/ || /^\| Key \|/ { next }
		/^\| `/ {
			split($0, f, / \| /)
			desc = f[5]; sub(/ \|$/, "", desc)
			line = "**" substr(f[1], 3) "** (" f[2]
			if (f[3] != "") line = line ", default " f[3]
			if (f[4] != "") line = line ", " f[4]
			print line ")"
			print ":   " desc
			print ""
			next
		}
		{ print }'
	printf '\n# SEE ALSO\n\n**hikyaku**(8), **sendmail**(8)\n'
} | "$pandoc" --standalone --from markdown --to man --output "$out"
