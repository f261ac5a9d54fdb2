/* fuzz_conf.c — libFuzzer target for the YAML configuration loader and the
 * users file parser (both take a path, so the input goes through a file).
 * Checks memory safety and that an accepted configuration dumps to YAML that
 * loads again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "conf/conf.h"
#include "auth/users.h"

static int fuzz_write(const char *path, const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return -1;
	fwrite(data, 1, size, f);
	fclose(f);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], dump[64], err[1024];
	snprintf(path, sizeof(path), "/tmp/hk-fuzz-conf-%d.yaml", (int)getpid());
	snprintf(dump, sizeof(dump), "/tmp/hk-fuzz-conf-%d.dump", (int)getpid());
	if (fuzz_write(path, data, size) < 0)
		return 0;

	struct conf *conf = NULL;
	if (conf_load(path, &conf, err, sizeof(err)) == 0) {
		FILE *f = fopen(dump, "w");
		if (f != NULL) {
			conf_dump(conf, f);
			fclose(f);
			struct conf *again = NULL;
			if (conf_load(dump, &again, err, sizeof(err)) < 0) {
				fprintf(stderr, "dump does not reload: %s\n", err);
				abort();
			}
			conf_free(&again);
		}
		conf_free(&conf);
	}

	struct users *users = NULL;
	if (users_load(path, &users, err, sizeof(err)) == 0)
		users_free(&users);
	unlink(path);
	unlink(dump);
	return 0;
}
