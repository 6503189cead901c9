# Helpers shared by the benchmark scripts (sourced, not run).

# A port nothing listens on now (the kernel picks it).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 30 s for something to listen on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# Rounds per `corelog-bench compare`: the order of the targets reverses every other round,
# because whichever runs first is often favoured on this machine.
ROUNDS=${BENCH_ROUNDS:-2}

# After deleting gigabytes of data: waits until the disk is done discarding it (5 s) and,
# on a VM whose balloon reports free pages to the host, until that reporting has gone quiet
# (at most 60 s). Here the host took back 12 GB of freed page cache over about 25 s, in
# bursts of 700-900 MiB, and each burst stalled a running broker for tens of milliseconds
# (see `corelog-tune check`, free_page_reporting): a scenario started then measures the host.
settle_after_delete() {
    sleep 5
    local reported=/sys/module/page_reporting/parameters/reported_kib
    [ -r "$reported" ] || return 0
    local before after
    before=$(cat "$reported")
    for _ in $(seq 30); do
        sleep 2
        after=$(cat "$reported")
        [ $((after - before)) -lt 65536 ] && return 0
        before=$after
    done
}
