/* smtp_params.h — ESMTP/DSN parameter values shared by every layer that
 * carries them: smtpd parses them, queue/ stores them in the envelope, smtpc
 * sends them onward, ctl prints them, the scheduler and bounces obey them.
 * Mail-generic vocabulary, no code and no I/O; it lives here, not in the
 * server's parser header, so that no lower layer includes smtpd/. */
#ifndef HK_MAIL_SMTP_PARAMS_H
#define HK_MAIL_SMTP_PARAMS_H

/* MAIL FROM BODY= (RFC 6152) and RET= (RFC 3461 §4.3). */
enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_ENVID_MAX 100 /* RFC 3461 §4.4 */
#define SMTP_ORCPT_MAX 500 /* RFC 3461 §4.2: addr-type ";" xtext, bounded */

/* RCPT TO NOTIFY= (RFC 3461 §4.1): NEVER alone, or any of the other three. */
#define SMTP_NOTIFY_NEVER 0x1
#define SMTP_NOTIFY_SUCCESS 0x2
#define SMTP_NOTIFY_FAILURE 0x4
#define SMTP_NOTIFY_DELAY 0x8

#endif
