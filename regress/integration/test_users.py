

def test_hashes_in_the_vault_alone(make_daemon, tmpbase):
    from test_privsep import memory_has, role_pids
    d = make_daemon()
    d.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
          check=True)
    d.ctl("user", "add", "tern", input=OTHER + "\n", check=True)
    store = tmpbase / "credentials.db"
    anna, tern = hashes(store)
    d.start()
    assert "event=credentials result=ok accounts=2" in d.logtext()
    assert "accounts=2" in [l for l in d.logtext().splitlines()
                            if "vault: event=start" in l][0]
    pids = role_pids(d)
    assert memory_has(pids["vault"], anna)
    assert memory_has(pids["vault"], tern)
    for role in ("smtp", "queue"):
        assert not memory_has(pids[role], anna), role
        assert not memory_has(pids[role], tern), role
    for role in ("smtp", "queue", "vault"):
        assert not memory_has(pids[role], PASSWORD.encode()), role
        assert not memory_has(pids[role], OTHER.encode()), role
