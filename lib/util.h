/*
 * util: the one growable string type, checked allocation and size
 * arithmetic shared by every process (ternd's parent and children, ternctl).
 */
#ifndef TERN_UTIL_H
#define TERN_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	char	*data;		/* always NUL-terminated when cap > 0 */
	size_t	 len;
	size_t	 cap;
};

void	 buf_init(struct buf *);
void	 buf_free(struct buf *);
void	 buf_reset(struct buf *);
void	 buf_append(struct buf *, const void *, size_t);
/* The same for secrets: growing leaves no copy behind (the old is wiped). */
void	 buf_append_wipe(struct buf *, const void *, size_t);
/* Room for extra more bytes now, so a secret appended later never leaves a
 * copy behind in a block that realloc gave up. */
void	 buf_reserve(struct buf *, size_t extra);
void	 buf_puts(struct buf *, const char *);
void	 buf_putc(struct buf *, int);
void	 buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	 buf_vprintf(struct buf *, const char *, va_list);
void	 buf_consume(struct buf *, size_t);	/* drop n bytes at the front */
char	*buf_steal(struct buf *);		/* caller owns the string */

/* Allocation failures are fatal: a process that cannot allocate stops. */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int	 size_add(size_t, size_t, size_t *);
int	 size_mul(size_t, size_t, size_t *);

/* Bounded copy: always terminates, returns strlen(src). */
size_t	 str_copy(char *, const char *, size_t);
/* ASCII case-insensitive helpers (locale-free). */
int	 str_casecmp(const char *, const char *);
void	 str_lower(char *);

/* Parse a decimal number in [min,max]; 0 ok, -1 bad. */
int	 parse_ll(const char *, long long, long long, long long *);

/* Read a whole file (at most max bytes); 0 ok, -1 with errno. */
int	 file_read_all(const char *, size_t, struct buf *);
/* Close every descriptor above 2 but the n in keep (any order). */
void	 fd_close_except(const int *keep, size_t n);
/*
 * Write all n bytes, again after EINTR and short writes; 0 ok, -1 with the
 * errno of the write that failed (ENOSPC on a full disk), or errno 0 if a
 * write took nothing and said nothing.  fd_strerror() names either.
 */
int	 fd_write_all(int, const void *, size_t);
const char *fd_strerror(int);

#endif
