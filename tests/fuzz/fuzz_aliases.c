/* fuzz_aliases.c — libFuzzer target for the aliases file (src/conf/aliases.c):
 * the input is written to a temporary file and loaded; when it loads, the
 * keys and targets found in it, and a few fixed addresses, are expanded.
 * Checks that results are distinct and bounded. */
#include "conf/aliases.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void fuzz_aliases_expand(const struct aliases *a, const char *addr)
{
	char **t = NULL;
	size_t n = 0;
	const char *error = NULL;

	if (aliases_expand(a, addr, &t, &n, &error) < 0) {
		if (t != NULL || n != 0 || error == NULL)
			abort();
		return;
	}
	if (n == 0 || n > ALIASES_TARGETS_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcasecmp(t[i], t[j]) == 0)
				abort();
	aliases_targets_free(&t, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct aliases *a = NULL;
	char err[512];

	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/tmp/fuzz-aliases-%ld", (long)getpid());
	}
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	int rc = aliases_load(path, &a, err, sizeof(err));
	unlink(path);
	if (rc < 0)
		return 0;
	/* Candidate addresses: every "word@word" run in the input. */
	const char *fixed[] = {"a@d", "A+tag@D", "postmaster@d", "x@example.org", "@d", "nope"};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		fuzz_aliases_expand(a, fixed[i]);
	size_t tried = 0;
	for (size_t i = 0; i < size && tried < 64; i++) {
		if (data[i] != '@')
			continue;
		size_t s = i, e = i + 1;
		while (s > 0 && data[s - 1] > ' ' && data[s - 1] != ',' && data[s - 1] != ':')
			s--;
		while (e < size && data[e] > ' ' && data[e] != ',' && data[e] != ':')
			e++;
		char addr[400];
		if (e - s >= sizeof(addr))
			continue;
		memcpy(addr, data + s, e - s);
		addr[e - s] = '\0';
		(void)aliases_has(a, addr);
		fuzz_aliases_expand(a, addr);
		tried++;
	}
	aliases_free(&a);
	return 0;
}
