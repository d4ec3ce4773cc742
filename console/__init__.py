"""The web console: the guideline's people find, play and account for recordings in a browser.

It runs as its own Unix user (``recorderd-console``) and never opens the store: each request is
checked here (signed in, role, CSRF) and again by the daemon, which it reaches only through the
control socket, acting for the signed-in person (``recorderd.client.call(..., acting_for=...)``).
"""
