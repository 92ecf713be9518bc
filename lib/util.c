/*
 * util: growable strings, checked allocation and size arithmetic.  Linked
 * into every process; allocation failure is the one fatal error it raises.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/util.h"

static void
oom(void)
{
	static const char msg[] = "tern: out of memory\n";

	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
xreallocarray(void *old, size_t n, size_t sz)
{
	size_t total;
	void *p;

	if (size_mul(n, sz, &total) == -1)
		oom();
	p = realloc(old, total ? total : 1);
	if (p == NULL)
		oom();
	return p;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p;
	size_t total;

	if (size_add(n, 1, &total) == -1)
		oom();
	p = xmalloc(total);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

int
size_add(size_t a, size_t b, size_t *out)
{
	if (a > SIZE_MAX - b)
		return -1;
	*out = a + b;
	return 0;
}

int
size_mul(size_t a, size_t b, size_t *out)
{
	if (a != 0 && b > SIZE_MAX / a)
		return -1;
	*out = a * b;
	return 0;
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->cap)
		b->data[0] = '\0';
}

void
buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;

	if (size_add(b->len, extra, &need) == -1 || size_add(need, 1, &need))
		oom();
	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 64;
	while (cap < need) {
		if (size_mul(cap, 2, &cap) == -1)
			oom();
	}
	b->data = xreallocarray(b->data, cap, 1);
	b->cap = cap;
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* For secrets: a larger buffer is a new one, and the old one is wiped. */
void
buf_append_wipe(struct buf *b, const void *p, size_t n)
{
	struct buf nb;

	if (b->cap == 0 || b->len + n >= b->cap) {
		buf_init(&nb);
		buf_reserve(&nb, b->len + n);
		if (b->len)
			memcpy(nb.data, b->data, b->len);
		nb.len = b->len;
		if (b->cap)
			explicit_bzero(b->data, b->cap);
		buf_free(b);
		*b = nb;
	}
	buf_append(b, p, n);
}

void
buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_putc(struct buf *b, int c)
{
	char ch = (char)c;

	buf_append(b, &ch, 1);
}

void
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

char *
buf_steal(struct buf *b)
{
	char *s;

	if (b->data == NULL)
		return xstrdup("");
	s = b->data;
	buf_init(b);
	return s;
}

size_t
str_copy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size) {
		size_t c = n < size - 1 ? n : size - 1;

		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int
str_casecmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		int d = lower((unsigned char)*a) - lower((unsigned char)*b);

		if (d || *a == '\0')
			return d;
	}
}

void
str_lower(char *s)
{
	for (; *s; s++)
		*s = (char)lower((unsigned char)*s);
}

int
parse_ll(const char *s, long long min, long long max, long long *out)
{
	long long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (LLONG_MAX - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
file_read_all(const char *path, size_t max, struct buf *out)
{
	char tmp[8192];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	for (;;) {
		n = read(fd, tmp, sizeof(tmp));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out->len + (size_t)n > max) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
		buf_append(out, tmp, (size_t)n);
	}
	close(fd);
	if (n == -1)
		return -1;
	if (out->data == NULL)
		buf_append(out, "", 0);
	return 0;
}

/*
 * Between each kept descriptor and the next, close_range(2) closes the
 * rest; keep is small (a delivery worker keeps two or three).
 */
void
fd_close_except(const int *keep, size_t n)
{
	int sorted[16], lo = 3, t;
	size_t i, j, m = 0;

	for (i = 0; i < n && m < 16; i++)
		if (keep[i] >= 3)
			sorted[m++] = keep[i];
	for (i = 1; i < m; i++)
		for (j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	for (i = 0; i < m; i++) {
		if (sorted[i] > lo)
			close_range((unsigned)lo, (unsigned)sorted[i] - 1, 0);
		if (sorted[i] >= lo)
			lo = sorted[i] + 1;
	}
	close_range((unsigned)lo, ~0U, 0);
}

/*
 * A write that comes up short sets no errno: the file took what it could
 * (a full disk, a file size limit), and only the next write says why.  So
 * every write goes on until all is written or one fails; errno is that
 * failure's, never one left over from an earlier call.
 */
int
fd_write_all(int fd, const void *p, size_t n)
{
	const char *s = p;
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, s, n)) == -1 && errno == EINTR)
			continue;
		if (w == -1)
			return -1;
		if (w == 0) {
			errno = 0;	/* took nothing, said nothing */
			return -1;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

const char *
fd_strerror(int e)
{
	return e == 0 ? "short write" : strerror(e);
}
