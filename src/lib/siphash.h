/* siphash.h — SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
 * short-input PRF", 2012): a keyed 64-bit hash for tables whose keys come
 * from the network, so that nobody without the key can choose inputs that
 * collide. Pure; any process, any thread. */
#ifndef HK_LIB_SIPHASH_H
#define HK_LIB_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

uint64_t siphash24(const unsigned char key[SIPHASH_KEY_LEN], const void *in, size_t len);

#endif
