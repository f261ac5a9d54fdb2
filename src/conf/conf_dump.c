/* conf_dump.c — the configuration back out as text: `hikyaku config dump`
 * (the effective configuration as YAML that loads again, every setting with
 * its doc as a comment) and `hikyaku config reference` (docs/CONFIG.md). Both
 * walk the settings table of conf.c, so they cannot disagree with the loader.
 *
 * Runs in `hikyaku config` (and the master for a dump on request). The
 * values were validated at load but may hold any printable Unicode (paths):
 * strings are always written double-quoted with escapes so that they read
 * back exactly, and comments are kept to one printable line. */
#include "conf/conf_int.h"

#include "lib/strutil.h"

#include <stdlib.h>
#include <string.h>

#define CONF_PREFIX_MAX 128

/* The reference's name of a type. */
static void conf_type_name(const struct conf_setting *s, char *out, size_t len)
{
	static const char *const names[] = {
	    [CONF_T_STRING] = "string", [CONF_T_BOOL] = "bool",         [CONF_T_UINT] = "uint",
	    [CONF_T_SIZE] = "size",     [CONF_T_DURATION] = "duration",
	};
	char values[128];

	switch (s->type) {
	case CONF_T_ENUM:
		conf_enum_list(s, values, sizeof(values));
		snprintf(out, len, "%s", values);
		break;
	case CONF_T_STRLIST:
		snprintf(out, len, "list of strings");
		break;
	case CONF_T_RECORDS:
		snprintf(out, len, "list of %ss", s->item_name);
		break;
	default:
		snprintf(out, len, "%s", names[s->type]);
		break;
	}
}

/* A YAML double-quoted scalar (YAML 1.2 §7.3.1), so any value reads back:
 * printable characters as they are, the rest as escapes (§5.7). */
static void conf_yaml_quote(FILE *out, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str);
	uint32_t cp;

	fputc('"', out);
	for (size_t i = 0; i < len;) {
		size_t n = conf_utf8_decode(s + i, len - i, &cp);
		if (n == 0) { /* not UTF-8 (cannot come from YAML): keep the byte's value */
			cp = s[i];
			n = 1;
		}
		if (cp == '"' || cp == '\\')
			fprintf(out, "\\%c", (char)cp);
		else if (cp >= 0x20 && cp != 0x7f && conf_yaml_printable(cp))
			fwrite(s + i, 1, n, out);
		else if (cp <= 0xff)
			fprintf(out, "\\x%02x", (unsigned)cp);
		else if (cp <= 0xffff)
			fprintf(out, "\\u%04x", (unsigned)cp);
		else
			fprintf(out, "\\U%08x", (unsigned)cp);
		i += n;
	}
	fputc('"', out);
}

/* A scalar value, after "key:". */
static void conf_dump_scalar(const void *base, const struct conf_setting *s, FILE *out)
{
	char num[32];
	const void *field = conf_field_const(base, s);

	switch (s->type) {
	case CONF_T_STRING:
		fputc(' ', out);
		conf_yaml_quote(out, *(char *const *)field);
		break;
	case CONF_T_BOOL:
		fprintf(out, " %s", *(const bool *)field ? "true" : "false");
		break;
	case CONF_T_ENUM:
		fprintf(out, " %s", s->names[*(const int *)field]);
		break;
	case CONF_T_UINT:
	case CONF_T_SIZE:
	case CONF_T_DURATION:
		conf_format_number(s, *(const uint64_t *)field, num, sizeof(num));
		fprintf(out, " %s", num);
		break;
	default:
		abort(); /* a list as a record field: the table is wrong */
	}
}

/* Records always as block mappings with every field, so that they read back
 * whatever the defaults. */
static void conf_dump_value(const void *base, const struct conf_setting *s, const char *name,
                            const char *indent, FILE *out)
{
	size_t n = conf_is_list(s) ? conf_count_const(base, s) : 0;

	fprintf(out, "%s%s:", indent, name);
	if (!conf_is_list(s))
		conf_dump_scalar(base, s, out);
	else if (n == 0)
		fputs(" []", out);
	for (size_t i = 0; i < n; i++) {
		if (s->type == CONF_T_STRLIST) {
			fprintf(out, "\n%s  - ", indent);
			conf_yaml_quote(out, (*(char *const *const *)conf_field_const(base, s))[i]);
			continue;
		}
		const char *rec =
		    *(const char *const *)conf_field_const(base, s) + i * s->item_size;
		for (size_t j = 0; j < s->n_fields; j++) {
			fprintf(out, "\n%s  %s%s:", indent, j == 0 ? "- " : "  ", s->fields[j].key);
			conf_dump_scalar(rec, &s->fields[j], out);
		}
	}
	fputc('\n', out);
}

/* Comments cannot escape: keep them to one printable line. */
static void conf_comment_print(FILE *out, const char *s)
{
	for (; *s != '\0'; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

void conf_dump(const struct conf *conf, FILE *out)
{
	const char *section = NULL;
	size_t seclen = 0;

	fputs("# hikyaku effective configuration, loaded from ", out);
	conf_comment_print(out, conf->file);
	fputs("\n", out);
	for (size_t i = 0; i < conf_n_settings; i++) {
		const struct conf_setting *s = &conf_settings[i];
		const char *dot = strchr(s->key, '.');
		const char *indent = dot != NULL ? "  " : "";

		if (dot != NULL && (section == NULL || (size_t)(dot - s->key) != seclen ||
		                    strncmp(section, s->key, seclen) != 0)) {
			section = s->key;
			seclen = (size_t)(dot - s->key);
			fprintf(out, "\n%.*s:\n", (int)seclen, section);
		}
		fprintf(out, "%s# %s\n", indent, s->doc);
		for (size_t j = 0; s->type == CONF_T_RECORDS && j < s->n_fields; j++)
			fprintf(out, "%s#   %s: %s\n", indent, s->fields[j].key, s->fields[j].doc);
		conf_dump_value(conf, s, dot != NULL ? dot + 1 : s->key, indent, out);
	}
}

/* A Markdown table cell: '|' would end the cell. */
static void conf_md_cell(FILE *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '|')
			fputs("\\|", out);
		else
			fputc(*s, out);
	}
}

/* One row of the reference table; prefix is "listen[]." for a record field. */
static void conf_reference_row(FILE *out, const struct conf_setting *s, const char *prefix)
{
	char lo[32], hi[32], type[160];

	conf_type_name(s, type, sizeof(type));
	fprintf(out, "| `%s%s` | ", prefix, s->key);
	conf_md_cell(out, type);
	fputs(" | ", out);
	if (s->required) {
		fputs("required", out);
	} else if (s->def != NULL) {
		fputc('`', out);
		conf_md_cell(out, s->def);
		fputc('`', out);
	} else {
		conf_md_cell(out, s->def_doc);
	}
	fputs(" | ", out);
	if (s->type == CONF_T_UINT || s->type == CONF_T_SIZE || s->type == CONF_T_DURATION) {
		conf_format_number(s, s->min, lo, sizeof(lo));
		conf_format_number(s, s->max, hi, sizeof(hi));
		fprintf(out, "%s..%s", lo, hi);
	}
	fputs(" | ", out);
	conf_md_cell(out, s->doc);
	fputs(" |\n", out);
}

void conf_reference(FILE *out)
{
	char prefix[CONF_PREFIX_MAX];

	fputs("# hikyaku configuration reference\n\n"
	      "<!-- Generated from the settings table in src/conf/conf.c by conf_reference();\n"
	      "     do not edit by hand. -->\n\n"
	      "hikyaku reads one YAML file, `/etc/hikyaku/hikyaku.yaml`. Every key is optional\n"
	      "except `listen`; unknown keys, wrong types and out-of-range values are errors\n"
	      "reported as `file:line:column: message`. `hikyaku config dump` prints the\n"
	      "effective configuration in the same format, and `hikyaku check` warns about\n"
	      "risky choices.\n\n"
	      "- **size**: octets, with an optional suffix `K`, `M`, `G` or `T` (powers of 1024):\n"
	      "  `512`, `100K`, `25M`, `2G`.\n"
	      "- **duration**: `250ms`, `30s`, `5m`, `2h`, `1d`; a bare number is seconds.\n"
	      "- **bool**: `true` or `false`.\n"
	      "- **list of listeners**: each item a mapping of the `listen[].` fields, e.g.\n"
	      "  `{address: \"*:465\", tls: implicit, submission: true}`, or just the address\n"
	      "  `\"host:port\"`, `\"[v6]:port\"` or `\"*:port\"` (all addresses) when the other\n"
	      "  fields keep their defaults.\n"
	      "- **list of certificates**: each item `{cert: path, key: path}`.\n"
	      "- **list of routes**: each item a mapping of the `routes[].` fields, e.g.\n"
	      "  `{domain: example.org, transport: lmtp, address: \"unix:/run/dovecot/lmtp\"}`\n"
	      "  or `{domain: example.net, transport: relay, address: \"[192.0.2.25]:587\",\n"
	      "  tls: verify, credentials: /etc/hikyaku/example.net.auth}` or\n"
	      "  `{domain: partner.example, transport: mx, port: 2526}` (its MX hosts on\n"
	      "  another port than `delivery.smtp_port`). The route of a\n"
	      "  recipient domain is its `routes` entry, else `local` for `local_domains`,\n"
	      "  else `relay` to `delivery.smarthost` when set, else `mx`.\n"
	      "- **TLS policies** of outbound connections: `none` (never STARTTLS), `may`\n"
	      "  (STARTTLS when offered, RFC 7435), `encrypt` (STARTTLS required, certificate\n"
	      "  not checked), `verify` (STARTTLS required, certificate and host name checked).\n"
	      "- Keys with a dot live in a section: `limits.message_size` is written\n"
	      "  `limits:` then `  message_size: 25M`.\n"
	      "- A listener with TLS needs `tls.certificates` or `tls.self_signed_dir`; a\n"
	      "  submission listener needs `auth` and TLS (or `plaintext_auth`).\n\n"
	      "| Key | Type | Default | Range | Description |\n"
	      "|-----|------|---------|-------|-------------|\n",
	      out);
	for (size_t i = 0; i < conf_n_settings; i++) {
		const struct conf_setting *s = &conf_settings[i];
		conf_reference_row(out, s, "");
		snprintf(prefix, sizeof(prefix), "%s[].", s->key);
		for (size_t j = 0; s->type == CONF_T_RECORDS && j < s->n_fields; j++)
			conf_reference_row(out, &s->fields[j], prefix);
	}
	fputs("\nWith no configuration file, `hikyaku serve` runs this embedded development "
	      "default:\n\n```yaml\n",
	      out);
	fputs(conf_embedded_default, out);
	fputs("```\n", out);
}
