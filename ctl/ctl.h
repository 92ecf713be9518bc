/* ctl: what ternctl's personalities share. */
#ifndef TERN_CTL_H
#define TERN_CTL_H

struct conf;

struct conf	*ctl_config(const char *path, int embedded);
/* One request on the control socket; its answer printed.  0 ok, 1 not. */
int		 ctl_request(const struct conf *, const char *req);
/* ternctl user ...: the credential store (argv[0] is "user"). */
int		 user_main(const struct conf *, int argc, char *argv[]);
/* ternctl check ...: the MX's checks on a message (argv[0] is "check"). */
int		 check_main(const struct conf *, int argc, char *argv[]);
/* ternctl dkim keygen ... (argv[0] is "dkim"). */
int		 dkim_main(const struct conf *, int argc, char *argv[]);
/* Print a DKIM key record in zone-file syntax (ctl/dkim.c). */
void		 dkim_print_record(const char *domain, const char *selector,
		    const char *txt);
/* ternctl dns DOMAIN [--check] (argv[0] is "dns"): 0, 1 problems, 2. */
int		 dnsctl_main(const struct conf *, int argc, char *argv[]);
/* sendmail(1) personality: submit stdin as a message. */
int		 sendmail_main(int argc, char *argv[], const char *confpath);
/* First thing: the setgid drop group is kept for sendmail's maildrop
   writes alone, as the saved group id; everything else lets it go. */
void		 maildrop_privs(int keep);

#endif
