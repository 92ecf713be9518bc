"""Installation and service scripts: `make install DESTDIR=...` lays out the
files, and the installed daemon starts, reloads and stops under the SysV
init script and under the commands of the systemd unit."""
import os
import shlex
import signal
import smtplib
import subprocess

import pytest

from conftest import ROOT, Daemon, wait_for


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    subprocess.run(["make", "-s", "install", f"DESTDIR={d}"], cwd=ROOT,
                   check=True, capture_output=True)
    return d


def test_install_layout(destdir):
    for f in ["usr/sbin/ternd", "usr/sbin/ternctl", "etc/tern/tern.conf",
              "etc/tern/aliases", "usr/share/man/man8/ternd.8",
              "usr/share/man/man8/ternctl.8", "usr/share/man/man5/tern.conf.5",
              "lib/systemd/system/ternd.service", "etc/init.d/ternd",
              "etc/logrotate.d/ternd"]:
        assert (destdir / f).exists(), f
    for link in ["sendmail", "mailq", "newaliases"]:
        p = destdir / "usr/sbin" / link
        assert p.is_symlink() and os.readlink(p) == "ternctl"
        # man sendmail (mailq, newaliases) finds ternctl's page.
        page = destdir / "usr/share/man/man8" / f"{link}.8"
        assert page.read_text() == ".so man8/ternctl.8\n"
    assert os.access(destdir / "usr/sbin/ternd", os.X_OK)
    r = subprocess.run([str(destdir / "usr/sbin/ternd"), "-n", "-f",
                        str(destdir / "etc/tern/tern.conf")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def deliver_one(d):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("a@example.org", ["demo@example.test"], b"x\r\n")
    return d.wait_mail("demo")


def test_sysv_init_script(destdir, tmpbase):
    d = Daemon(tmpbase)
    env = dict(os.environ, DAEMON=str(destdir / "usr/sbin/ternd"),
               CONF=str(d.conf), PIDFILE=str(tmpbase / "ternd.pid"))
    script = str(destdir / "etc/init.d/ternd")

    def rc(action):
        return subprocess.run(["sh", script, action], env=env, timeout=60,
                              capture_output=True, text=True)
    try:
        assert rc("status").returncode == 3
        r = rc("start")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = int((tmpbase / "ternd.pid").read_text())
        assert rc("status").returncode == 0
        assert deliver_one(d)
        assert rc("reload").returncode == 0
        assert rc("restart").returncode == 0
        assert int((tmpbase / "ternd.pid").read_text()) != pid
        r = rc("stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert rc("status").returncode == 3
    finally:
        rc("stop")


def nofile_soft(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-file limit for %d" % pid)


def test_sysv_init_script_sets_the_units_open_file_limit(destdir, tmpbase):
    # A shell's usual 1024 descriptors would not do for max-connections:
    # the init script gives ternd what the systemd unit's LimitNOFILE does.
    import resource
    unit = (destdir / "lib/systemd/system/ternd.service").read_text()
    want = int(unit.split("LimitNOFILE=", 1)[1].split()[0])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < want and os.geteuid() != 0:
        pytest.skip("the hard open-file limit is below the unit's")
    d = Daemon(tmpbase)
    env = dict(os.environ, DAEMON=str(destdir / "usr/sbin/ternd"),
               CONF=str(d.conf), PIDFILE=str(tmpbase / "ternd.pid"))
    script = str(destdir / "etc/init.d/ternd")

    def shell_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    def rc(action):
        return subprocess.run(["sh", script, action], env=env, timeout=60,
                              capture_output=True, text=True,
                              preexec_fn=shell_limit)
    try:
        r = rc("start")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = int((tmpbase / "ternd.pid").read_text())
        if hard == resource.RLIM_INFINITY or hard >= want:
            assert nofile_soft(pid) == want
        else:
            # Root without CAP_SYS_RESOURCE: as far as the hard limit goes,
            # and the script says so.
            assert nofile_soft(pid) == hard
            assert "open-file limit" in r.stderr
    finally:
        rc("stop")


def unit_commands(destdir, conf, pidfile):
    """ExecStartPre/ExecStart/ExecReload and PIDFile of the installed unit,
    pointed at the DESTDIR binaries and the test config."""
    cmds = {}
    for line in (destdir / "lib/systemd/system/ternd.service").read_text() \
            .splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        k, v = line.split("=", 1)
        v = v.replace("/usr/sbin/", f"{destdir}/usr/sbin/")
        v = v.replace("/etc/tern/tern.conf", str(conf))
        v = v.replace("/run/tern/ternd.pid", str(pidfile))
        cmds.setdefault(k, []).append(v)
    return cmds


def test_systemd_unit_commands(destdir, tmpbase):
    d = Daemon(tmpbase)
    pidfile = tmpbase / "ternd.pid"
    u = unit_commands(destdir, d.conf, pidfile)
    assert u["Type"] == ["forking"]
    assert u["PIDFile"] == [str(pidfile)]
    for c in u.get("ExecStartPre", []):
        subprocess.run(shlex.split(c), check=True, timeout=30)
    # Type=forking: ExecStart returns once the daemon is up and the pidfile
    # names it.
    subprocess.run(shlex.split(u["ExecStart"][0]), check=True, timeout=30)
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
        assert deliver_one(d)
        for c in u["ExecReload"]:
            subprocess.run(shlex.split(c.replace("$MAINPID", str(pid))),
                           check=True, timeout=30)
        os.kill(pid, signal.SIGTERM)    # systemd's stop, KillMode=mixed
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30)
        assert not pidfile.exists()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
