/* metrics.c — shared counters (metrics.h). Any process, any thread.
 *
 * The one module-level variable, the process's slot, is set once at start
 * before any thread runs and only read after (like log.c's level): passing
 * a context to every counting site (sessions, DNS callbacks, delivery
 * workers) would touch every layer for one pointer. */
#include "lib/metrics.h"

#include "lib/alloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define METRICS_MAGIC 0x686b6d74u                     /* "hkmt" */
#define METRICS_SLOT_CELLS (((METRIC_N + 7) / 8) * 8) /* whole cache lines */

struct metrics_hdr {
	uint32_t magic;
	uint32_t nslots;
	uint32_t ncells;
	uint32_t pad[13]; /* the slots start on a cache line */
};

struct metrics {
	int fd;
	size_t size;
	unsigned slot;
	struct metrics_hdr *h;
	_Atomic uint64_t *cells; /* nslots * METRICS_SLOT_CELLS */
};

static _Atomic uint64_t *metrics_mine; /* this process's slot, or NULL */

static const uint64_t metrics_accept_le[METRICS_ACCEPT_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};
static const uint64_t metrics_delivery_le[METRICS_DELIVERY_BUCKETS] = {
    100000,   500000,    1000000,   5000000,       10000000,       30000000,
    60000000, 300000000, 900000000, 3600000000ULL, 14400000000ULL, 86400000000ULL};

static size_t metrics_size(unsigned nslots)
{
	return sizeof(struct metrics_hdr) + (size_t)nslots * METRICS_SLOT_CELLS * sizeof(uint64_t);
}

static struct metrics *metrics_map(int fd, size_t size, bool ro)
{
	void *p = mmap(NULL, size, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct metrics *m = xcalloc(1, sizeof(*m));
	m->fd = fd;
	m->size = size;
	m->h = p;
	m->cells = (_Atomic uint64_t *)((unsigned char *)p + sizeof(struct metrics_hdr));
	return m;
}

struct metrics *metrics_create(unsigned nslots)
{
	if (nslots == 0)
		nslots = 1;
	size_t size = metrics_size(nslots);
	int fd = memfd_create("hikyaku-metrics", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		errno = e;
		return NULL;
	}
	struct metrics *m = metrics_map(fd, size, false);
	if (m == NULL) {
		close(fd);
		return NULL;
	}
	m->h->magic = METRICS_MAGIC;
	m->h->nslots = nslots;
	m->h->ncells = METRICS_SLOT_CELLS;
	return m;
}

static struct metrics *metrics_attach_as(int fd, unsigned slot, bool ro)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct metrics_hdr))
		return NULL;
	struct metrics *m = metrics_map(fd, (size_t)st.st_size, ro);
	if (m == NULL)
		return NULL;
	/* The same binary made it, but check what is read before trusting
	 * the sizes. */
	if (m->h->magic != METRICS_MAGIC || m->h->ncells != METRICS_SLOT_CELLS ||
	    m->h->nslots == 0 || metrics_size(m->h->nslots) > m->size) {
		metrics_free(&m);
		return NULL;
	}
	m->slot = slot < m->h->nslots ? slot : m->h->nslots - 1;
	return m;
}

struct metrics *metrics_attach(int fd, unsigned slot)
{
	return metrics_attach_as(fd, slot, false);
}

struct metrics *metrics_attach_ro(int fd)
{
	return metrics_attach_as(fd, 0, true);
}

int metrics_fd(const struct metrics *m)
{
	return m->fd;
}

unsigned metrics_nslots(const struct metrics *m)
{
	return m->h->nslots;
}

void metrics_free(struct metrics **mp)
{
	struct metrics *m = *mp;
	if (m == NULL)
		return;
	*mp = NULL;
	if (metrics_mine != NULL && metrics_mine >= m->cells &&
	    metrics_mine < m->cells + (size_t)m->h->nslots * METRICS_SLOT_CELLS)
		metrics_mine = NULL;
	munmap(m->h, m->size);
	close(m->fd);
	free(m);
}

void metrics_set_process(struct metrics *m)
{
	metrics_mine = m != NULL ? m->cells + (size_t)m->slot * METRICS_SLOT_CELLS : NULL;
}

void metrics_add(enum metric which, uint64_t n)
{
	_Atomic uint64_t *s = metrics_mine;
	if (s != NULL && (unsigned)which < METRIC_N)
		atomic_fetch_add_explicit(&s[which], n, memory_order_relaxed);
}

void metrics_inc(enum metric which)
{
	metrics_add(which, 1);
}

void metrics_set(enum metric which, uint64_t v)
{
	_Atomic uint64_t *s = metrics_mine;
	if (s != NULL && (unsigned)which < METRIC_N)
		atomic_store_explicit(&s[which], v, memory_order_relaxed);
}

void metrics_conn(size_t listener, enum metric_conn_result r)
{
	if (listener >= METRICS_LISTENERS)
		listener = METRICS_LISTENERS - 1;
	metrics_inc((enum metric)(METRIC_CONN_FIRST + listener * METRIC_CONN_N + r));
}

void metrics_delivery(enum metric_transport t, enum metric_dstatus s)
{
	metrics_inc((enum metric)(METRIC_DLV_FIRST + (unsigned)t * 3 + (unsigned)s));
}

static void metrics_observe(const uint64_t *le, size_t n, enum metric b0, enum metric count,
                            enum metric sum, uint64_t us)
{
	size_t i = 0;
	while (i < n && us > le[i])
		i++;
	metrics_inc((enum metric)(b0 + i));
	metrics_inc(count);
	metrics_add(sum, us);
}

void metrics_observe_accept(uint64_t us)
{
	metrics_observe(metrics_accept_le, METRICS_ACCEPT_BUCKETS, METRIC_ACCEPT_B0,
	                METRIC_ACCEPT_COUNT, METRIC_ACCEPT_SUM_US, us);
}

void metrics_observe_delivery(uint64_t us)
{
	metrics_observe(metrics_delivery_le, METRICS_DELIVERY_BUCKETS, METRIC_DELIVERY_B0,
	                METRIC_DELIVERY_COUNT, METRIC_DELIVERY_SUM_US, us);
}

void metrics_reject(int code, const char *enh)
{
	enum metric c;
	if (enh == NULL)
		enh = "";
	if (code == 452 && strncmp(enh, "4.5.3", 5) == 0)
		c = METRIC_REJ_RECIPIENT; /* too many recipients */
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".7.", 3) == 0)
		c = METRIC_REJ_POLICY;
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".1.7", 4) == 0 ||
	         strncmp(enh + (enh[0] ? 1 : 0), ".1.8", 4) == 0)
		c = METRIC_REJ_SENDER;
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".1.", 3) == 0)
		c = METRIC_REJ_RECIPIENT;
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".3.4", 4) == 0)
		c = METRIC_REJ_SIZE;
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".5.", 3) == 0)
		c = METRIC_REJ_PROTOCOL;
	else if (strncmp(enh + (enh[0] ? 1 : 0), ".6.", 3) == 0)
		c = METRIC_REJ_CONTENT;
	else if (code >= 400 && code < 500)
		c = METRIC_REJ_TEMPFAIL;
	else
		c = METRIC_REJ_OTHER;
	metrics_inc(c);
}

uint64_t metrics_read(const struct metrics *m, enum metric which)
{
	uint64_t sum = 0;
	if ((unsigned)which >= METRIC_N)
		return 0;
	for (unsigned i = 0; i < m->h->nslots; i++)
		sum += atomic_load_explicit(&m->cells[(size_t)i * METRICS_SLOT_CELLS + which],
		                            memory_order_relaxed);
	return sum;
}

/* ---- the exposition ---- */

static void metrics_family(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: \\, \" and \n escaped (exposition format). */
static void metrics_label(struct buf *out, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(out, "\\%c", *v);
		else if (*v == '\n')
			buf_append_str(out, "\\n");
		else
			buf_append_byte(out, (unsigned char)*v);
	}
}

static void metrics_histogram(struct buf *out, const struct metrics *m, const char *name,
                              const char *help, const uint64_t *le, size_t n, enum metric b0,
                              enum metric count, enum metric sum)
{
	uint64_t cum = 0;
	metrics_family(out, name, "histogram", help);
	for (size_t i = 0; i <= n; i++) {
		cum += metrics_read(m, (enum metric)(b0 + i));
		if (i < n)
			buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)le[i] / 1e6,
			           (unsigned long long)cum);
		else
			buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name,
			           (unsigned long long)cum);
	}
	buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, (double)metrics_read(m, sum) / 1e6,
	           name, (unsigned long long)metrics_read(m, count));
}

static void metrics_render_conns(const struct metrics *m, const char *const *names, size_t n,
                                 struct buf *out)
{
	static const char *const results[METRIC_CONN_N] = {"accepted", "refused"};
	metrics_family(out, "hikyaku_smtp_connections_total", "counter",
	               "SMTP connections by listener and result.");
	if (n > METRICS_LISTENERS)
		n = METRICS_LISTENERS;
	for (size_t l = 0; l < n; l++) {
		for (unsigned r = 0; r < METRIC_CONN_N; r++) {
			buf_append_str(out, "hikyaku_smtp_connections_total{listener=\"");
			metrics_label(out, names[l]);
			buf_printf(
			    out, "\",result=\"%s\"} %llu\n", results[r],
			    (unsigned long long)metrics_read(
			        m, (enum metric)(METRIC_CONN_FIRST + l * METRIC_CONN_N + r)));
		}
	}
}

void metrics_render(const struct metrics *m, const char *const *names, size_t n, uint64_t now_us,
                    struct buf *out)
{
	static const char *const rej[] = {"policy",   "recipient", "sender",   "size",
	                                  "protocol", "content",   "tempfail", "other"};
	static const char *const tr[] = {"local", "smtp", "lmtp", "relay"};
	static const char *const ds[] = {"sent", "deferred", "bounced"};

	metrics_render_conns(m, names, n, out);
	metrics_family(out, "hikyaku_tls_sessions_total", "counter",
	               "TLS sessions of the SMTP server by protocol version (failed: handshakes "
	               "that failed).");
	buf_printf(out,
	           "hikyaku_tls_sessions_total{version=\"TLSv1.2\"} %llu\n"
	           "hikyaku_tls_sessions_total{version=\"TLSv1.3\"} %llu\n"
	           "hikyaku_tls_sessions_total{version=\"other\"} %llu\n"
	           "hikyaku_tls_sessions_total{version=\"failed\"} %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_TLS_V12),
	           (unsigned long long)metrics_read(m, METRIC_TLS_V13),
	           (unsigned long long)metrics_read(m, METRIC_TLS_OTHER),
	           (unsigned long long)metrics_read(m, METRIC_TLS_FAILED));
	metrics_family(out, "hikyaku_auth_total", "counter", "SMTP AUTH exchanges by result.");
	buf_printf(out,
	           "hikyaku_auth_total{result=\"success\"} %llu\n"
	           "hikyaku_auth_total{result=\"failure\"} %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_AUTH_SUCCESS),
	           (unsigned long long)metrics_read(m, METRIC_AUTH_FAILURE));
	metrics_family(out, "hikyaku_messages_accepted_total", "counter",
	               "Messages accepted (250 after the end of data).");
	buf_printf(out, "hikyaku_messages_accepted_total %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_MSG_ACCEPTED));
	metrics_family(out, "hikyaku_messages_rejected_total", "counter",
	               "4xx/5xx replies to SMTP commands and messages, by reason class.");
	for (size_t i = 0; i < sizeof(rej) / sizeof(rej[0]); i++)
		buf_printf(
		    out, "hikyaku_messages_rejected_total{class=\"%s\"} %llu\n", rej[i],
		    (unsigned long long)metrics_read(m, (enum metric)(METRIC_REJ_POLICY + i)));
	metrics_family(out, "hikyaku_deliveries_total", "counter",
	               "Delivery attempts per recipient by transport and status.");
	for (size_t t = 0; t < 4; t++)
		for (size_t s = 0; s < 3; s++)
			buf_printf(
			    out, "hikyaku_deliveries_total{transport=\"%s\",status=\"%s\"} %llu\n",
			    tr[t], ds[s],
			    (unsigned long long)metrics_read(
			        m, (enum metric)(METRIC_DLV_FIRST + t * 3 + s)));
	metrics_family(out, "hikyaku_queue_messages", "gauge", "Messages in the queue by state.");
	buf_printf(out,
	           "hikyaku_queue_messages{state=\"active\"} %llu\n"
	           "hikyaku_queue_messages{state=\"deferred\"} %llu\n"
	           "hikyaku_queue_messages{state=\"held\"} %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_Q_ACTIVE),
	           (unsigned long long)metrics_read(m, METRIC_Q_DEFERRED),
	           (unsigned long long)metrics_read(m, METRIC_Q_HELD));
	uint64_t oldest = metrics_read(m, METRIC_Q_OLDEST_US);
	metrics_family(out, "hikyaku_queue_oldest_message_age_seconds", "gauge",
	               "Age of the oldest message in the queue (0 when it is empty).");
	buf_printf(out, "hikyaku_queue_oldest_message_age_seconds %.3f\n",
	           oldest != 0 && now_us > oldest ? (double)(now_us - oldest) / 1e6 : 0.0);
	metrics_histogram(out, m, "hikyaku_accept_latency_seconds",
	                  "From the end of a message's data to its 250 reply (spool commit).",
	                  metrics_accept_le, METRICS_ACCEPT_BUCKETS, METRIC_ACCEPT_B0,
	                  METRIC_ACCEPT_COUNT, METRIC_ACCEPT_SUM_US);
	metrics_histogram(out, m, "hikyaku_delivery_latency_seconds",
	                  "From a message's arrival to a recipient's final delivery.",
	                  metrics_delivery_le, METRICS_DELIVERY_BUCKETS, METRIC_DELIVERY_B0,
	                  METRIC_DELIVERY_COUNT, METRIC_DELIVERY_SUM_US);
	metrics_family(out, "hikyaku_dns_lookups_total", "counter", "DNS queries made.");
	buf_printf(out, "hikyaku_dns_lookups_total %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_DNS_LOOKUPS));
	metrics_family(out, "hikyaku_dns_errors_total", "counter",
	               "DNS queries that failed (timeouts, SERVFAIL; not NXDOMAIN).");
	buf_printf(out, "hikyaku_dns_errors_total %llu\n",
	           (unsigned long long)metrics_read(m, METRIC_DNS_ERRORS));
}
