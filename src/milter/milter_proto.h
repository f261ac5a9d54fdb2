/* milter_proto.h — the Sendmail milter wire protocol, version 6: frame
 * encoding of the commands smtpd sends and a resumable decoder of the
 * replies a milter sends back. Pure: no I/O, no allocation beyond the
 * caller's buffer. Used by smtpd's milter client (milter.c); the replies
 * are hostile (a milter is another program, maybe on another host).
 *
 * A frame is a 32-bit length in network order (counting the command octet
 * and the data), the command octet, then the data. */
#ifndef HK_MILTER_MILTER_PROTO_H
#define HK_MILTER_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define MILTER_VERSION 6

/* Commands (MTA to milter). */
#define SMFIC_ABORT 'A'
#define SMFIC_BODY 'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO 'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO 'H'
#define SMFIC_HEADER 'L'
#define SMFIC_MAIL 'M'
#define SMFIC_EOH 'N'
#define SMFIC_OPTNEG 'O'
#define SMFIC_QUIT 'Q'
#define SMFIC_RCPT 'R'
#define SMFIC_DATA 'T'

/* Replies (milter to MTA). */
#define SMFIR_ADDRCPT '+'
#define SMFIR_DELRCPT '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN '4'
#define SMFIR_ACCEPT 'a'
#define SMFIR_REPLBODY 'b'
#define SMFIR_CONTINUE 'c'
#define SMFIR_DISCARD 'd'
#define SMFIR_CHGFROM 'e'
#define SMFIR_CONN_FAIL 'f'
#define SMFIR_ADDHEADER 'h'
#define SMFIR_INSHEADER 'i'
#define SMFIR_SETSYMLIST 'l'
#define SMFIR_CHGHEADER 'm'
#define SMFIR_PROGRESS 'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT 'r'
#define SMFIR_SKIP 's'
#define SMFIR_TEMPFAIL 't'
#define SMFIR_REPLYCODE 'y'

/* Actions the milter may take (OPTNEG). */
#define SMFIF_ADDHDRS 0x01
#define SMFIF_CHGBODY 0x02
#define SMFIF_ADDRCPT 0x04
#define SMFIF_DELRCPT 0x08
#define SMFIF_CHGHDRS 0x10
#define SMFIF_QUARANTINE 0x20
#define SMFIF_CHGFROM 0x40
#define SMFIF_ADDRCPT_PAR 0x80
#define MILTER_ACTIONS_OFFERED 0xffu

/* Protocol steps the milter may skip (NO*) or not answer (NR_*). */
#define SMFIP_NOCONNECT 0x1
#define SMFIP_NOHELO 0x2
#define SMFIP_NOMAIL 0x4
#define SMFIP_NORCPT 0x8
#define SMFIP_NOBODY 0x10
#define SMFIP_NOHDRS 0x20
#define SMFIP_NOEOH 0x40
#define SMFIP_NR_HDR 0x80
#define SMFIP_NOUNKNOWN 0x100
#define SMFIP_NODATA 0x200
#define SMFIP_SKIP 0x400
#define SMFIP_NR_CONN 0x1000
#define SMFIP_NR_HELO 0x2000
#define SMFIP_NR_MAIL 0x4000
#define SMFIP_NR_RCPT 0x8000
#define SMFIP_NR_DATA 0x10000
#define SMFIP_NR_UNKN 0x20000
#define SMFIP_NR_EOH 0x40000
#define SMFIP_NR_BODY 0x80000
/* Offered: every NO* and NR_* step, and SKIP; not RCPT_REJ (0x800) nor
 * HDR_LEADSPC (0x100000), whose semantics we do not implement. */
#define MILTER_PROTOCOL_OFFERED 0xff7ffu

/* Bounds on a reply's data: a body replacement chunk may be large (libmilter
 * sends at most 64 KiB per chunk; 1 MiB leaves room), anything else is a
 * few strings. */
#define MILTER_REPLY_MAX (64u * 1024)
#define MILTER_REPLBODY_MAX (1024u * 1024)
/* Body chunks we send: at most 64 KiB (libmilter's MILTER_CHUNK_SIZE). */
#define MILTER_CHUNK 65535u

/* Append one frame (cmd, data[0..len)) to out; -1 if out's max is hit. */
int milter_frame_put(struct buf *out, char cmd, const void *data, size_t len);
/* Append a frame whose data is NUL-terminated strings, strs[0..n). */
int milter_frame_put_strs(struct buf *out, char cmd, const char *const *strs, size_t n);
/* SMFIC_OPTNEG with version, actions and protocol flags. */
int milter_frame_optneg(struct buf *out, uint32_t version, uint32_t actions, uint32_t protocol);
/* SMFIC_CONNECT: hostname, family ('4', '6', 'U' or 'L'), port, address. */
int milter_frame_connect(struct buf *out, const char *host, char family, uint16_t port,
                         const char *addr);

/* One reply frame, a view into the decoder's input. */
struct milter_reply {
	char cmd;
	const unsigned char *data;
	size_t len;
};

/* Decode one frame from p[0..len): 1 with *r and *used_r set, 0 when more
 * octets are needed, -1 on a frame that breaks the bounds (a length of 0,
 * or above MILTER_REPLY_MAX, MILTER_REPLBODY_MAX for SMFIR_REPLBODY) with
 * *error_r. */
int milter_reply_decode(const unsigned char *p, size_t len, struct milter_reply *r, size_t *used_r,
                        const char **error_r);

/* The parts of a reply's data. Each returns 0, or -1 on malformed data. */
/* OPTNEG: version, actions, protocol. */
int milter_reply_optneg(const struct milter_reply *r, uint32_t *version_r, uint32_t *actions_r,
                        uint32_t *protocol_r);
/* n NUL-terminated strings (after skip octets), into strs; a missing
 * trailing string is an error unless it is optional (min ≤ count). */
int milter_reply_strs(const struct milter_reply *r, size_t skip, const char **strs, size_t min,
                      size_t max, size_t *n_r);
/* INSHEADER / CHGHEADER: index, name, value. */
int milter_reply_header(const struct milter_reply *r, uint32_t *idx_r, const char **name_r,
                        const char **value_r);
/* SMFIR_REPLYCODE: "5xx x.y.z text" or "4xx ...": code, enhanced code
 * ("" when none) and text, checked: 3 digits, 4xx/5xx, printable text. */
int milter_reply_code(const struct milter_reply *r, int *code_r, char *enh, size_t enhlen,
                      char *text, size_t textlen);

#endif
