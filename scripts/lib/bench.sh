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
