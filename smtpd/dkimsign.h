/*
 * dkimsign: DKIM signing of one message in the smtp process (RFC 6376,
 * RFC 8463), the glue between a session and auth/dkim.c and the vault.
 * The session feeds it each header line and each body line as DATA
 * streams in; at the end of the header it reserves, in the message, room
 * exactly as long as the DKIM-Signature field(s) will be; at the end of
 * data it asks the vault to sign the digests and writes the fields over
 * that room, before the message is committed.  Nothing is read back.
 */
#ifndef TERN_DKIMSIGN_H
#define TERN_DKIMSIGN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "auth/vault.h"

struct buf;
struct dsign;

/* NULL when no key is configured: nothing to do for this message. */
struct dsign	*dsign_new(void);
void		 dsign_free(struct dsign *);
/* One header line as stored (without CRLF); text: several, CRLF-ended. */
void		 dsign_hline(struct dsign *, const char *, size_t);
void		 dsign_htext(struct dsign *, const char *, size_t);
/*
 * The header ends: append the room to wbuf, whose end is at offset off
 * of the message file.  The bytes appended (0: not signed).
 */
size_t		 dsign_hend(struct dsign *, struct buf *wbuf, off_t off);
void		 dsign_bline(struct dsign *, const char *, size_t);
/* Ask the vault: 0 asked, 1 nothing to sign, -1 no vault. */
int		 dsign_request(struct dsign *, vault_cb, uint64_t cookie);
/* The vault's answer written into the file: 0, or -1 (why says). */
int		 dsign_write(struct dsign *, int fd, int status,
		    const char *sigs, const char **why);
/* For the log: "d=example.org s=sel1,sel2". */
void		 dsign_describe(const struct dsign *, char *, size_t);

#endif
