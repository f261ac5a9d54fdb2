/* test_maildir.c — Maildir delivery (src/deliver/maildir.c): the content as
 * stored, and the repeatable file names that keep a delivery repeated after
 * a crash from writing a second copy (found in new/, or in cur/ once a mail
 * client moved it there). */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/maildir.h"

static char root[256];

static int setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/hk-test-maildir-XXXXXX");
	return mkdtemp(root) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[512];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

/* Names in <root>/example.org/bob/Maildir/<sub>; returns how many, the
 * first one in first (if any). */
static size_t count_files(const char *sub, char *first, size_t firstlen)
{
	char dir[512];
	size_t n = 0;
	snprintf(dir, sizeof(dir), "%s/example.org/bob/Maildir/%s", root, sub);
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	const struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n++ == 0 && first != NULL)
			snprintf(first, firstlen, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static const unsigned char body[] = "Subject: x\r\n\r\nhello\r\n";

static struct maildir_msg msg_with(const char *unique, bool search_cur)
{
	struct maildir_msg m = {
		.data = body,
		.len = sizeof(body) - 1,
		.return_path = "",
		.delivered_to = "bob@example.org",
		.hostname = "mx/1:test",
		.unique = unique,
		.search_cur = search_cur,
	};
	return m;
}

static void test_unique_for(void **state)
{
	char u[MAILDIR_UNIQUE_MAX];
	(void)state;
	maildir_unique_for(1700000000123456ULL, "0123456789abcdef", 7, u);
	assert_string_equal(u, "1700000000.Q0123456789abcdefR7");
}

static void test_content_and_name(void **state)
{
	char err[256], name[512], path[1024], data[256];
	(void)state;
	struct maildir_msg m = msg_with("1.QaR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	/* '/' and ':' of the host name are escaped; the size is Maildir++'s S=. */
	const char *want = "Return-Path: <>\nDelivered-To: bob@example.org\nSubject: x\n\nhello\n";
	char expect[128];
	snprintf(expect, sizeof(expect), "1.QaR0.mx\\0571\\072test,S=%zu", strlen(want));
	assert_string_equal(name, expect);
	snprintf(path, sizeof(path), "%s/example.org/bob/Maildir/new/%s", root, name);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	fclose(f);
	data[n] = '\0';
	assert_string_equal(data, want);
}

/* A Maildir++ folder (DMARC quarantine: ".Junk"): the copy goes there, not
 * into the inbox; a folder name that could leave the mailbox is refused. */
static void test_folder(void **state)
{
	char err[256];
	(void)state;
	struct maildir_msg m = msg_with("2.QaR0", false);
	m.folder = ".Junk";
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files(".Junk/new", NULL, 0), 1);
	assert_int_equal(count_files("new", NULL, 0), 0);
	m.folder = "../Junk";
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), -1);
	m.folder = ".a/../../b";
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), -1);
	assert_string_equal(err, "unsafe folder name");
}

static void test_repeat_finds_new(void **state)
{
	char err[256];
	(void)state;
	struct maildir_msg m = msg_with("2.QbR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	assert_int_equal(count_files("new", NULL, 0), 1);
	/* Another recipient index is another copy. */
	struct maildir_msg m1 = msg_with("2.QbR1", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m1, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

static void test_repeat_finds_cur(void **state)
{
	char err[256], name[512], from[1024], to[1100];
	(void)state;
	struct maildir_msg m = msg_with("3.QcR0", true);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	/* A mail client reads it: new/NAME -> cur/NAME:2,S */
	snprintf(from, sizeof(from), "%s/example.org/bob/Maildir/new/%s", root, name);
	snprintf(to, sizeof(to), "%s/example.org/bob/Maildir/cur/%s:2,S", root, name);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	assert_int_equal(count_files("new", NULL, 0), 0);
	assert_int_equal(count_files("cur", NULL, 0), 1);
	/* A prefix of another name is not a match: R0 is not R01. */
	struct maildir_msg m2 = msg_with("3.QcR01", true);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m2, err, sizeof(err)), 0);
}

static void test_stale_tmp_is_replaced(void **state)
{
	char err[256], path[1024];
	(void)state;
	struct maildir_msg m = msg_with("4.QdR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	/* What a crash between the write and the rename leaves behind. */
	struct maildir_msg m2 = msg_with("4.QdR1", false);
	snprintf(path, sizeof(path), "%s/example.org/bob/Maildir/tmp/4.QdR1.mx\\0571\\072test", root);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("half", f);
	fclose(f);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m2, err, sizeof(err)), 0);
	assert_int_equal(count_files("tmp", NULL, 0), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

static void test_random_names_differ(void **state)
{
	char err[256];
	(void)state;
	struct maildir_msg m = msg_with(NULL, false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

/* The reference: CRLF -> LF, every other octet (a lone CR too) kept. */
static size_t lf_ref(const unsigned char *in, size_t n, unsigned char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++)
		if (!(in[i] == '\r' && i + 1 < n && in[i + 1] == '\n'))
			out[o++] = in[i];
	return o;
}

static unsigned char *read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *p = malloc((size_t)n + 1);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len_r = (size_t)n;
	return p;
}

/* The content read from a file through MAILDIR_WINDOW windows, with a CRLF
 * split across the first boundary, a lone CR ending the second window and
 * the message ending in a lone CR: the copy is the reference conversion,
 * the same as from memory, and S= is its size. */
static void test_streamed_from_file(void **state)
{
	(void)state;
	const size_t W = MAILDIR_WINDOW, n = 3 * W + 100, off = 16;
	unsigned char *content = malloc(n);
	for (size_t i = 0; i < n; i++)
		content[i] = i % 50 == 49 ? '\n' : (i % 50 == 48 ? '\r' : (unsigned char)('a' + i % 26));
	content[W - 1] = '\r';
	content[W] = '\n';
	content[2 * W - 1] = '\r';
	content[2 * W] = 'x';
	content[n - 1] = '\r';
	char path[300];
	snprintf(path, sizeof(path), "%s/spoolfile", root);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	unsigned char hdr[16] = "HKMSG";
	assert_int_equal(write(fd, hdr, off), (ssize_t)off);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(write(fd, "ENVELOPE", 8), 8); /* must not be copied */

	unsigned char *want = malloc(n);
	size_t wlen = lf_ref(content, n, want);
	struct maildir_msg m = {
	    .fd = fd, .off = off, .len = n, .return_path = "", .delivered_to = "bob@example.org",
	    .hostname = "h", .unique = "5.QfR0"};
	assert_int_equal(maildir_lf_size(&m, &m.lf_len), 0);
	assert_int_equal(m.lf_len, wlen);
	char err[256], name[256], file[600];
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	const char *head = "Return-Path: <>\nDelivered-To: bob@example.org\n";
	char expect[128];
	snprintf(expect, sizeof(expect), "5.QfR0.h,S=%zu", strlen(head) + wlen);
	assert_string_equal(name, expect);
	snprintf(file, sizeof(file), "%s/example.org/bob/Maildir/new/%s", root, name);
	size_t got_len;
	unsigned char *got = read_file(file, &got_len);
	assert_int_equal(got_len, strlen(head) + wlen);
	assert_memory_equal(got, head, strlen(head));
	assert_memory_equal(got + strlen(head), want, wlen);
	free(got);

	/* the same content from memory: the same file */
	struct maildir_msg mem = m;
	mem.data = content;
	mem.unique = "5.QfR1";
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &mem, err, sizeof(err)), 0);
	snprintf(file, sizeof(file), "%s/example.org/bob/Maildir/new/5.QfR1.h,S=%zu", root,
	         strlen(head) + wlen);
	got = read_file(file, &got_len);
	assert_int_equal(got_len, strlen(head) + wlen);
	assert_memory_equal(got + strlen(head), want, wlen);
	free(got);

	/* a read error (a closed descriptor) is a temporary failure, no file */
	close(fd);
	m.unique = "5.QfR2";
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "read spool"));
	assert_int_equal(count_files("new", NULL, 0), 2);
	assert_int_equal(count_files("tmp", NULL, 0), 0);
	free(want);
	free(content);
}

/* Deliveries into one Maildir from several threads at once: every copy
 * lands whole, and the fsyncs of new/ are never more than the deliveries
 * (they are shared when deliveries overlap: group commit). */
#define GC_THREADS 8
#define GC_EACH 25
static void *gc_worker(void *arg)
{
	size_t t = (size_t)arg;
	char err[256], uniq[64];
	for (size_t i = 0; i < GC_EACH; i++) {
		snprintf(uniq, sizeof(uniq), "7.QgT%zuR%zu", t, i);
		struct maildir_msg m = msg_with(uniq, false);
		m.fresh = true;
		if (maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)) != 0)
			return (void *)1;
	}
	return NULL;
}

static void test_concurrent_deliveries_share_fsyncs(void **state)
{
	pthread_t th[GC_THREADS];
	(void)state;
	uint64_t before = maildir_dir_syncs();
	for (size_t t = 0; t < GC_THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, gc_worker, (void *)t), 0);
	for (size_t t = 0; t < GC_THREADS; t++) {
		void *r;
		assert_int_equal(pthread_join(th[t], &r), 0);
		assert_null(r);
	}
	uint64_t syncs = maildir_dir_syncs() - before;
	assert_int_equal(count_files("new", NULL, 0), GC_THREADS * GC_EACH);
	assert_int_equal(count_files("tmp", NULL, 0), 0);
	assert_true(syncs >= 1 && syncs <= GC_THREADS * GC_EACH);
	print_message("new/ fsyncs: %llu for %d deliveries\n", (unsigned long long)syncs,
	              GC_THREADS * GC_EACH);
}

/* A fresh delivery (first attempt of a message) does not look for an
 * earlier copy; delivered again as fresh, its name (queue id and
 * recipient) is taken in new/, so the first copy is kept (1), as a
 * non-fresh delivery keeps it after its search. */
static void test_fresh_skips_the_search(void **state)
{
	char err[256], name[512], path[1024];
	(void)state;
	struct maildir_msg m = msg_with("8.QhR0", false);
	m.fresh = true;
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	m.fresh = false;
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	snprintf(path, sizeof(path), "%s/example.org/bob/Maildir/new/%s", root, name);
	size_t len;
	unsigned char *got = read_file(path, &len);
	const char *want = "Return-Path: <>\nDelivered-To: bob@example.org\nSubject: x\n\nhello\n";
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unique_for),
	    cmocka_unit_test_setup_teardown(test_content_and_name, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repeat_finds_new, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_folder, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repeat_finds_cur, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_tmp_is_replaced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_names_differ, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_streamed_from_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_deliveries_share_fsyncs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_skips_the_search, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
