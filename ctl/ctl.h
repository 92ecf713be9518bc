/* ctl: what ternctl's personalities share. */
#ifndef TERN_CTL_H
#define TERN_CTL_H

struct conf;

struct conf	*ctl_config(const char *path, int embedded);
/* ternctl user ...: the credential store (argv[0] is "user"). */
int		 user_main(const struct conf *, int argc, char *argv[]);
/* sendmail(1) personality: submit stdin as a message. */
int		 sendmail_main(int argc, char *argv[], const char *confpath);

#endif
