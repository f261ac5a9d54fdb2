/* dmarcrep.c — DMARC aggregate report records: the codec and the day
 * files (dmarcrep.h). The codec runs in smtpd (encode) and the queue
 * (decode, on its event loop); the reader in the CLI and the queue's
 * report worker. Hostile: record bodies from smtpd, day files' bytes. */
#include "dauth/dmarcrep.h"

#include "lib/alloc.h"
#include "lib/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char dmarcrep_magic[4] = {'D', 'M', 'R', '1'};

enum dmarcrep_tag {
	T_TIME = 1,
	T_POLICY_DOMAIN,
	T_P,
	T_SP,
	T_PCT,
	T_ADKIM,
	T_ASPF,
	T_RUA, /* u64 max, then the URI */
	T_SOURCE_IP,
	T_DISPOSITION,
	T_DKIM_ALIGNED,
	T_SPF_ALIGNED,
	T_REASON,
	T_HEADER_FROM,
	T_ENV_FROM,
	T_ENV_TO,
	T_DKIM, /* u8 result, u8 domain length, domain, selector */
	T_SPF_DOMAIN,
	T_SPF_HELO,
	T_SPF_RESULT,
	T_NTAGS
};

const char *dmarcrep_dkim_result_name(unsigned r)
{
	static const char *const names[] = {"none",    "pass",      "fail",     "policy",
	                                    "neutral", "temperror", "permerror"};
	return r < DMARCREP_DKIM_N ? names[r] : "none";
}

const char *dmarcrep_spf_result_name(unsigned r)
{
	static const char *const names[] = {"none",     "neutral",   "pass",     "fail",
	                                    "softfail", "temperror", "permerror"};
	return r < DMARCREP_SPF_N ? names[r] : "none";
}

const char *dmarcrep_reason_name(unsigned r)
{
	static const char *const names[] = {
	    "",     "forwarded", "sampled_out", "trusted_forwarder", "mailing_list", "local_policy",
	    "other"};
	return r < DMARCREP_REASON_N ? names[r] : "other";
}

/* ---- encoding ---- */

static int rep_field(struct buf *out, uint8_t tag, const void *p, size_t n)
{
	if (n > 0xffff)
		return -1;
	unsigned char h[3] = {tag, (unsigned char)(n >> 8), (unsigned char)n};
	if (buf_append(out, h, 3) < 0)
		return -1;
	return n > 0 ? buf_append(out, p, n) : 0;
}

static int rep_u8(struct buf *out, uint8_t tag, unsigned v)
{
	unsigned char c = (unsigned char)v;
	return rep_field(out, tag, &c, 1);
}

static void rep_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

static uint64_t rep_get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static int rep_str(struct buf *out, uint8_t tag, const char *s)
{
	return rep_field(out, tag, s, strlen(s));
}

int dmarcrep_rec_encode(const struct dmarcrep_rec *r, struct buf *out)
{
	unsigned char t8[8];
	int rc = 0;
	rep_be64(t8, r->time);
	rc |= rep_field(out, T_TIME, t8, 8);
	rc |= rep_str(out, T_POLICY_DOMAIN, r->policy_domain);
	rc |= rep_u8(out, T_P, r->p);
	rc |= rep_u8(out, T_SP, r->sp);
	rc |= rep_u8(out, T_PCT, r->pct);
	rc |= rep_u8(out, T_ADKIM, r->adkim_strict);
	rc |= rep_u8(out, T_ASPF, r->aspf_strict);
	for (size_t i = 0; i < r->nrua && i < DMARC_RUA_MAX; i++) {
		unsigned char v[8 + sizeof(r->rua[0])];
		size_t n = strnlen(r->rua[i], sizeof(r->rua[0]) - 1);
		rep_be64(v, r->rua_max[i]);
		memcpy(v + 8, r->rua[i], n);
		rc |= rep_field(out, T_RUA, v, 8 + n);
	}
	rc |= rep_str(out, T_SOURCE_IP, r->source_ip);
	rc |= rep_u8(out, T_DISPOSITION, r->disposition);
	rc |= rep_u8(out, T_DKIM_ALIGNED, r->dkim_aligned);
	rc |= rep_u8(out, T_SPF_ALIGNED, r->spf_aligned);
	rc |= rep_u8(out, T_REASON, r->reason);
	rc |= rep_str(out, T_HEADER_FROM, r->header_from);
	rc |= rep_str(out, T_ENV_FROM, r->env_from);
	rc |= rep_str(out, T_ENV_TO, r->env_to);
	for (size_t i = 0; i < r->ndkim && i < DMARCREP_DKIM_MAX; i++) {
		const struct dmarcrep_dkim *d = &r->dkim[i];
		unsigned char v[2 + sizeof(d->domain) + sizeof(d->selector)];
		size_t dl = strnlen(d->domain, sizeof(d->domain) - 1);
		size_t sl = strnlen(d->selector, sizeof(d->selector) - 1);
		v[0] = d->result;
		v[1] = (unsigned char)dl;
		memcpy(v + 2, d->domain, dl);
		memcpy(v + 2 + dl, d->selector, sl);
		rc |= rep_field(out, T_DKIM, v, 2 + dl + sl);
	}
	rc |= rep_str(out, T_SPF_DOMAIN, r->spf_domain);
	rc |= rep_u8(out, T_SPF_HELO, r->spf_helo);
	rc |= rep_u8(out, T_SPF_RESULT, r->spf_result);
	return rc != 0 ? -1 : 0;
}

/* ---- decoding ---- */

/* A token we keep: printable ASCII without spaces (domains, addresses,
 * selectors, URIs), shorter than outlen. */
static bool rep_get_str(const unsigned char *p, size_t n, char *out, size_t outlen)
{
	if (n >= outlen)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

static bool rep_get_u8(const unsigned char *p, size_t n, unsigned max, uint8_t *out)
{
	if (n != 1 || p[0] > max)
		return false;
	*out = p[0];
	return true;
}

static bool rep_get_bool(const unsigned char *p, size_t n, bool *out)
{
	uint8_t v;
	if (!rep_get_u8(p, n, 1, &v))
		return false;
	*out = v != 0;
	return true;
}

static bool rep_decode_dkim(const unsigned char *v, size_t n, struct dmarcrep_rec *r)
{
	if (r->ndkim >= DMARCREP_DKIM_MAX || n < 2 || v[0] >= DMARCREP_DKIM_N ||
	    (size_t)v[1] > n - 2)
		return false;
	struct dmarcrep_dkim *d = &r->dkim[r->ndkim];
	d->result = v[0];
	if (!rep_get_str(v + 2, v[1], d->domain, sizeof(d->domain)) ||
	    !rep_get_str(v + 2 + v[1], n - 2 - v[1], d->selector, sizeof(d->selector)))
		return false;
	r->ndkim++;
	return true;
}

static bool rep_decode_field(unsigned tag, const unsigned char *v, size_t n, struct dmarcrep_rec *r)
{
	switch (tag) {
	case T_TIME:
		if (n != 8)
			return false;
		r->time = rep_get64(v);
		return true;
	case T_POLICY_DOMAIN:
		return rep_get_str(v, n, r->policy_domain, sizeof(r->policy_domain));
	case T_P:
		return rep_get_u8(v, n, DMARC_P_REJECT, &r->p);
	case T_SP:
		return rep_get_u8(v, n, DMARC_P_REJECT, &r->sp);
	case T_PCT:
		return rep_get_u8(v, n, 100, &r->pct);
	case T_ADKIM:
		return rep_get_bool(v, n, &r->adkim_strict);
	case T_ASPF:
		return rep_get_bool(v, n, &r->aspf_strict);
	case T_RUA:
		if (r->nrua >= DMARC_RUA_MAX || n < 8 + 8 ||
		    !rep_get_str(v + 8, n - 8, r->rua[r->nrua], sizeof(r->rua[0])) ||
		    strncasecmp(r->rua[r->nrua], "mailto:", 7) != 0)
			return false;
		r->rua_max[r->nrua++] = rep_get64(v);
		return true;
	case T_SOURCE_IP: {
		unsigned char a[16];
		return rep_get_str(v, n, r->source_ip, sizeof(r->source_ip)) &&
		       (inet_pton(AF_INET, r->source_ip, a) == 1 ||
		        inet_pton(AF_INET6, r->source_ip, a) == 1);
	}
	case T_DISPOSITION:
		return rep_get_u8(v, n, DMARC_DISP_REJECT, &r->disposition);
	case T_DKIM_ALIGNED:
		return rep_get_bool(v, n, &r->dkim_aligned);
	case T_SPF_ALIGNED:
		return rep_get_bool(v, n, &r->spf_aligned);
	case T_REASON:
		return rep_get_u8(v, n, DMARCREP_REASON_N - 1, &r->reason);
	case T_HEADER_FROM:
		return rep_get_str(v, n, r->header_from, sizeof(r->header_from));
	case T_ENV_FROM:
		return rep_get_str(v, n, r->env_from, sizeof(r->env_from));
	case T_ENV_TO:
		return rep_get_str(v, n, r->env_to, sizeof(r->env_to));
	case T_DKIM:
		return rep_decode_dkim(v, n, r);
	case T_SPF_DOMAIN:
		return rep_get_str(v, n, r->spf_domain, sizeof(r->spf_domain));
	case T_SPF_HELO:
		return rep_get_bool(v, n, &r->spf_helo);
	case T_SPF_RESULT:
		return rep_get_u8(v, n, DMARCREP_SPF_N - 1, &r->spf_result);
	default:
		return false;
	}
}

int dmarcrep_rec_decode(const void *p, size_t len, struct dmarcrep_rec *r, const char **error_r)
{
	const unsigned char *b = p;
	uint32_t seen = 0;
	memset(r, 0, sizeof(*r));
	if (len > DMARCREP_BODY_MAX) {
		*error_r = "record too long";
		return -1;
	}
	for (size_t off = 0; off < len;) {
		if (len - off < 3) {
			*error_r = "truncated field";
			return -1;
		}
		unsigned tag = b[off];
		size_t n = (size_t)b[off + 1] << 8 | b[off + 2];
		off += 3;
		if (n > len - off) {
			*error_r = "field longer than the record";
			return -1;
		}
		bool repeats = tag == T_RUA || tag == T_DKIM;
		if (tag == 0 || tag >= T_NTAGS || (!repeats && (seen & (1u << tag)) != 0)) {
			*error_r = "unknown or repeated field";
			return -1;
		}
		seen |= 1u << tag;
		if (!rep_decode_field(tag, b + off, n, r)) {
			*error_r = "invalid field value";
			return -1;
		}
		off += n;
	}
	uint32_t need =
	    1u << T_TIME | 1u << T_POLICY_DOMAIN | 1u << T_SOURCE_IP | 1u << T_HEADER_FROM;
	if ((seen & need) != need || r->policy_domain[0] == '\0' || r->header_from[0] == '\0') {
		*error_r = "a required field is missing";
		return -1;
	}
	return 0;
}

static void rep_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t rep_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int dmarcrep_frame(const void *body, size_t len, struct buf *out)
{
	if (len > DMARCREP_BODY_MAX)
		return -1;
	unsigned char h[DMARCREP_HDR_LEN];
	memcpy(h, dmarcrep_magic, 4);
	rep_be32(h + 4, (uint32_t)len);
	uLong crc = crc32(0L, h, DMARCREP_HDR_LEN);
	crc = crc32(crc, body, (uInt)len);
	unsigned char c[4];
	rep_be32(c, (uint32_t)crc);
	if (buf_append(out, h, sizeof(h)) < 0 || buf_append(out, body, len) < 0 ||
	    buf_append(out, c, 4) < 0)
		return -1;
	return 0;
}

/* ---- reading a day ---- */

/* A good record at p? Its whole length, or 0. r NULL: its CRC is checked,
 * its body not decoded (the writer's repair, on the queue's loop: the
 * file is its own, the reader decodes every record anyway). */
static size_t rep_frame_at(const unsigned char *p, size_t len, struct dmarcrep_rec *r)
{
	if (len < DMARCREP_FRAME_OVERHEAD || memcmp(p, dmarcrep_magic, 4) != 0)
		return 0;
	size_t n = rep_get32(p + 4);
	if (n > DMARCREP_BODY_MAX || n > len - DMARCREP_FRAME_OVERHEAD)
		return 0;
	uLong crc = crc32(0L, p, (uInt)(DMARCREP_HDR_LEN + n));
	if ((uint32_t)crc != rep_get32(p + DMARCREP_HDR_LEN + n))
		return 0;
	const char *error;
	if (r != NULL && dmarcrep_rec_decode(p + DMARCREP_HDR_LEN, n, r, &error) < 0)
		return 0;
	return DMARCREP_FRAME_OVERHEAD + n;
}

int dmarcrep_day_parse(const void *p, size_t len, dmarcrep_rec_cb *cb, void *arg,
                       struct dmarcrep_scan *st)
{
	const unsigned char *b = p;
	struct dmarcrep_rec *r = cb != NULL ? xmalloc(sizeof(*r)) : NULL;
	memset(st, 0, sizeof(*st));
	size_t off = 0;
	bool in_bad = false;
	int rc = 0;
	while (off < len && rc == 0) {
		size_t n = rep_frame_at(b + off, len - off, r);
		if (n == 0) {
			/* damaged or torn: look for the next magic */
			if (!in_bad) {
				in_bad = true;
				st->bad++;
			}
			const unsigned char *m = memchr(b + off + 1, 'D', len - off - 1);
			size_t next = m != NULL ? (size_t)(m - b) : len;
			st->bad_octets += next - off;
			off = next;
			continue;
		}
		in_bad = false;
		off += n;
		st->valid_end = off;
		st->records++;
		rc = cb != NULL ? cb(r, arg) : 0;
	}
	free(r);
	return rc;
}

void dmarcrep_day_name(time_t t, char out[9])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	unsigned v[3] = {(unsigned)(tm.tm_year + 1900) % 10000, (unsigned)tm.tm_mon + 1,
	                 (unsigned)tm.tm_mday};
	out[0] = (char)('0' + v[0] / 1000);
	out[1] = (char)('0' + v[0] / 100 % 10);
	out[2] = (char)('0' + v[0] / 10 % 10);
	out[3] = (char)('0' + v[0] % 10);
	out[4] = (char)('0' + v[1] / 10);
	out[5] = (char)('0' + v[1] % 10);
	out[6] = (char)('0' + v[2] / 10);
	out[7] = (char)('0' + v[2] % 10);
	out[8] = '\0';
}

int dmarcrep_day_range(const char *day, time_t *begin_r, time_t *end_r)
{
	if (strlen(day) != 8 || strspn(day, "0123456789") != 8)
		return -1;
	struct tm tm = {0};
	tm.tm_year = (day[0] - '0') * 1000 + (day[1] - '0') * 100 + (day[2] - '0') * 10 +
	             (day[3] - '0') - 1900;
	tm.tm_mon = (day[4] - '0') * 10 + (day[5] - '0') - 1;
	tm.tm_mday = (day[6] - '0') * 10 + (day[7] - '0');
	if (tm.tm_year < 70 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31)
		return -1;
	time_t b = timegm(&tm);
	char back[9];
	dmarcrep_day_name(b, back);
	if (b == (time_t)-1 || strcmp(back, day) != 0) /* 20260231 */
		return -1;
	*begin_r = b;
	*end_r = b + 86400;
	return 0;
}

static int rep_read_file(int fd, uint64_t max, struct buf *out, const char **error_r)
{
	struct stat sb;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		*error_r = "not a regular file";
		return -1;
	}
	size_t want = (uint64_t)sb.st_size < max ? (size_t)sb.st_size : (size_t)max;
	if (buf_reserve(out, want) < 0) {
		*error_r = "too large";
		return -1;
	}
	while (out->len < want) {
		ssize_t n = read(fd, out->data + out->len, want - out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = strerror(errno);
			return -1;
		}
		if (n == 0)
			break;
		out->len += (size_t)n;
	}
	return 0;
}

int dmarcrep_day_read(const char *spool_dir, const char *day, uint64_t max, dmarcrep_rec_cb *cb,
                      void *arg, struct dmarcrep_scan *st, const char **error_r)
{
	time_t b, e;
	memset(st, 0, sizeof(*st));
	if (dmarcrep_day_range(day, &b, &e) < 0) {
		*error_r = "not a day (YYYYMMDD)";
		return -1;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/dmarc/%s", spool_dir, day);
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return 1;
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	struct buf data;
	buf_init(&data, 0);
	int rc = rep_read_file(fd, max, &data, error_r);
	close(fd);
	if (rc == 0)
		(void)dmarcrep_day_parse(data.data, data.len, cb, arg, st);
	buf_free(&data);
	return rc;
}

/* ---- appending ---- */

struct dmarcrep_writer {
	char dir[4096];
	uint64_t max;
	int fd;
	char day[9];
	uint64_t size;
	bool full_logged;
};

struct dmarcrep_writer *dmarcrep_writer_create(const char *spool_dir, uint64_t max_day_size)
{
	struct dmarcrep_writer *w = xcalloc(1, sizeof(*w));
	snprintf(w->dir, sizeof(w->dir), "%s/dmarc", spool_dir);
	w->max = max_day_size;
	w->fd = -1;
	if (mkdir(w->dir, 0750) < 0 && errno != EEXIST)
		log_warn("event=dmarc_dir_failed dir=%s error=\"%s\"", w->dir, strerror(errno));
	return w;
}

void dmarcrep_writer_free(struct dmarcrep_writer **wp)
{
	struct dmarcrep_writer *w = *wp;
	if (w == NULL)
		return;
	*wp = NULL;
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

/* The common case, on the queue's loop: the records' lengths chain
 * exactly to the end and the last one's CRC holds (what our own appends
 * leave when nothing crashed). len, or 0 when a full scan must tell. */
static size_t rep_fast_end(const unsigned char *p, size_t len)
{
	size_t off = 0, last = 0;
	while (len - off >= DMARCREP_FRAME_OVERHEAD && memcmp(p + off, dmarcrep_magic, 4) == 0) {
		size_t n = rep_get32(p + off + 4);
		if (n > DMARCREP_BODY_MAX || n > len - off - DMARCREP_FRAME_OVERHEAD)
			return 0;
		last = off;
		off += DMARCREP_FRAME_OVERHEAD + n;
	}
	if (off != len || rep_frame_at(p + last, len - last, NULL) != len - last)
		return 0;
	return len;
}

/* Open the day's file; a torn tail (a crash in a write) is cut so that
 * the next record follows a good one. */
static int rep_writer_open(struct dmarcrep_writer *w, const char *day, const char **error_r)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->full_logged = false;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", w->dir, day);
	int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	struct stat sb;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		*error_r = "not a regular file";
		close(fd);
		return -1;
	}
	size_t len = (size_t)sb.st_size, end = 0;
	if (len > 0) {
		void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED) {
			*error_r = strerror(errno);
			close(fd);
			return -1;
		}
		end = rep_fast_end(m, len);
		if (end != len) { /* a crash tore it (or worse): find the last good record */
			struct dmarcrep_scan st;
			(void)dmarcrep_day_parse(m, len, NULL, NULL, &st);
			end = st.valid_end;
		}
		munmap(m, len);
	}
	if (end < len) {
		log_warn("event=dmarc_day_repaired day=%s kept=%zu cut=%zu", day, end, len - end);
		if (ftruncate(fd, (off_t)end) < 0) {
			*error_r = strerror(errno);
			close(fd);
			return -1;
		}
	}
	w->fd = fd;
	w->size = end;
	memcpy(w->day, day, sizeof(w->day));
	return 0;
}

int dmarcrep_writer_append(struct dmarcrep_writer *w, const void *body, size_t len, time_t now,
                           const char **error_r)
{
	struct dmarcrep_rec *r = xmalloc(sizeof(*r));
	int rc = dmarcrep_rec_decode(body, len, r, error_r);
	free(r);
	if (rc < 0)
		return -1;
	char day[9];
	dmarcrep_day_name(now, day);
	if ((w->fd < 0 || strcmp(day, w->day) != 0) && rep_writer_open(w, day, error_r) < 0)
		return -1;
	if (w->size + DMARCREP_FRAME_OVERHEAD + len > w->max) {
		if (!w->full_logged)
			log_warn("event=dmarc_day_full day=%s size=%llu max=%llu", day,
			         (unsigned long long)w->size, (unsigned long long)w->max);
		w->full_logged = true;
		return 1;
	}
	struct buf f;
	buf_init(&f, 0);
	(void)dmarcrep_frame(body, len, &f);
	ssize_t n = write(w->fd, f.data, f.len);
	size_t flen = f.len;
	buf_free(&f);
	if (n < 0 || (size_t)n != flen) {
		*error_r = n < 0 ? strerror(errno) : "short write";
		/* a short write leaves a torn record: cut it at the next open */
		close(w->fd);
		w->fd = -1;
		return -1;
	}
	w->size += flen;
	return 0;
}
