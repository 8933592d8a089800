"""The supervisor and everything only it uses: arbiter loop, child state machine, pidfile,
heartbeat, state file, stop, the log pipeline and log tailing, alerts."""
