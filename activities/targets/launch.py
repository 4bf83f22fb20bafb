"""Start a program detached from whoever asked for it, and print its pid.

    python launch.py LOG_FILE CWD -- PROGRAM [ARG...]

Run as a script (standard library only), never imported: the worker that asks is
multithreaded, where forking is unsafe, and an Airflow component must outlive it. The
double fork leaves the program a child of init in a session of its own, so killing or
restarting the worker never stops it and no zombie of it waits on the worker. The
program's environment is this script's environment.
"""

import os
import sys


def main(log_file: str, cwd: str, argv: list[str]) -> int:
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        os.setsid()
        if os.fork() == 0:
            try:
                os.setpgid(0, 0)  # leads its own group, so stopping it can take its helpers along
                os.chdir(cwd)
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.write(write_end, f"{os.getpid()}\n".encode())
                os.set_inheritable(write_end, False)  # closes on exec: end-of-file tells the launcher it worked
                os.execv(argv[0], argv)
            except OSError as err:
                os.write(write_end, f"error {err}\n".encode())
            os._exit(127)
        os._exit(0)
    os.close(write_end)
    os.wait()
    answer = b""
    while chunk := os.read(read_end, 4096):
        answer += chunk
    lines = answer.decode().splitlines()
    if len(lines) != 1:
        print(lines[-1] if lines else "error the program never started", file=sys.stderr)
        return 1
    print(lines[0])
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit("usage: launch.py LOG_FILE CWD -- PROGRAM [ARG...]")
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[4:]))
