/* authfail.c — the per-address AUTH failure table of authfail.h: open
 * addressing over a fixed array, AUTHFAIL_PROBE slots from a SipHash of
 * the address key, no eviction of live entries, one shared overflow count.
 *
 * Runs in smtpd on the event loop. The addresses are the clients' own
 * (hostile in the sense that an attacker chooses many of them). */
#include "auth/authfail.h"

#include "lib/alloc.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define AUTHFAIL_PROBE 8

struct authfail_entry {
	unsigned char addr[16];
	unsigned count;    /* failures and guesses in flight; 0: the slot is free */
	uint64_t first_ms; /* start of the window */
};

struct authfail {
	struct authfail_entry *slots;
	size_t n;
	unsigned char key[SIPHASH_KEY_LEN];
	struct authfail_entry overflow; /* every address that found no slot */
};

struct authfail *authfail_create(size_t slots, const unsigned char key[SIPHASH_KEY_LEN])
{
	struct authfail *t = xcalloc(1, sizeof(*t));

	t->n = slots;
	t->slots = xcalloc(slots, sizeof(*t->slots));
	if (key != NULL) {
		memcpy(t->key, key, sizeof(t->key));
	} else if (getrandom(t->key, sizeof(t->key), 0) != (ssize_t)sizeof(t->key)) {
		fprintf(stderr, "hikyaku: getrandom failed: no key for the AUTH failure table\n");
		abort();
	}
	return t;
}

void authfail_free(struct authfail **tp)
{
	if (*tp == NULL)
		return;
	free((*tp)->slots);
	free(*tp);
	*tp = NULL;
}

void authfail_addr_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		/* a v4-mapped client of a dual-stack socket is an IPv4 address */
		memcpy(out, a, IN6_IS_ADDR_V4MAPPED(a) ? 16 : 8);
	}
}

static bool authfail_live(const struct authfail_entry *e, uint64_t now, uint64_t window)
{
	return e->count > 0 && now - e->first_ms <= window;
}

/* The address's entry; else, when create, a free slot of its probe window
 * (taken) or the shared overflow entry. NULL when not found and !create,
 * unless every slot of the window is live: then the overflow entry, which
 * is where the address's guesses were counted. */
static struct authfail_entry *authfail_find(struct authfail *t, const struct sockaddr_storage *ss,
                                            uint64_t now, uint64_t window, bool create)
{
	unsigned char key[16];
	struct authfail_entry *free_slot = NULL;

	authfail_addr_key(ss, key);
	uint64_t h = siphash24(t->key, key, sizeof(key));
	for (size_t i = 0; i < AUTHFAIL_PROBE && i < t->n; i++) {
		struct authfail_entry *e = &t->slots[(h + i) % t->n];
		if (!authfail_live(e, now, window)) {
			if (free_slot == NULL)
				free_slot = e;
		} else if (memcmp(e->addr, key, sizeof(key)) == 0) {
			return e;
		}
	}
	if (free_slot != NULL) {
		if (!create)
			return NULL;
		memcpy(free_slot->addr, key, sizeof(key));
		free_slot->count = 0;
		free_slot->first_ms = now;
		return free_slot;
	}
	if (!authfail_live(&t->overflow, now, window)) {
		t->overflow.count = 0;
		t->overflow.first_ms = now;
	}
	return &t->overflow;
}

int authfail_reserve(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                     uint64_t window_ms, unsigned max)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, true);

	if (e->count >= max)
		return -1; /* a slot taken for this call stays free: count 0 */
	e->count++;
	return 0;
}

void authfail_release(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                      uint64_t window_ms)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, false);

	if (e != NULL && e->count > 0)
		e->count--;
}

unsigned authfail_count(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                        uint64_t window_ms)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, false);

	return e != NULL ? e->count : 0;
}
