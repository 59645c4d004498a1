"""IO-bound / CPU-bound WSGI workload app from "Gunicorn Sync Workers".

Environment:
  IO_BOUND, CPU_BOUND  percentages (integers) that must add up to 100.
  IO_SECONDS           seconds of IO at IO_BOUND=100 (default 1.0).
  ITERATIONS           CPU loop rounds at CPU_BOUND=100 (default 5000000).
  DATABASE_URL         if set, the IO is `SELECT pg_sleep(x)` through psycopg2 (through pg8000, a
                       pure-Python driver, where psycopg2 cannot be imported: packaged for wasmcorn,
                       where C extensions cannot run); if unset, the IO is time.sleep(x).

Run: IO_BOUND=100 gunicorn --chdir bench/gunicorn --workers 1 workload:application
"""
import os
import time

# Choose if our work is IO bound or CPU bound, or a mix of the two
io_percentage = int(os.getenv("IO_BOUND", "0"))
cpu_percentage = int(os.getenv("CPU_BOUND", "0"))

if io_percentage + cpu_percentage != 100:
    raise ValueError(io_percentage, cpu_percentage)

IO_SECONDS = float(os.getenv("IO_SECONDS", "1.0"))
ITERATIONS = int(os.getenv("ITERATIONS", "5000000"))
DATABASE_URL = os.getenv("DATABASE_URL") or None

if DATABASE_URL:
    try:
        import psycopg2  # only needed (and imported) when a database is configured
    except ImportError:
        psycopg2 = None
        from pg8000_io import pg_sleep


def application(environ, start_response):
    start = time.time()

    if io_percentage:
        sleep_seconds = float(io_percentage) / 100.0 * IO_SECONDS
        if DATABASE_URL and psycopg2 is None:
            pg_sleep(DATABASE_URL, sleep_seconds)
        elif DATABASE_URL:
            # Connect to the database for IO bound work
            db_connection = psycopg2.connect(DATABASE_URL)
            try:
                with db_connection.cursor() as db_cursor:
                    db_cursor.execute("SELECT pg_sleep(%s)", (sleep_seconds,))
            finally:
                db_connection.close()
        else:
            time.sleep(sleep_seconds)
    if cpu_percentage:
        max_iterations = (float(cpu_percentage) / 100.0) * ITERATIONS
        iterations_done = 0
        work = 15
        while iterations_done < max_iterations:
            # do arbitrary math to utilize the CPU
            work = (work + 7 + work / 2) % 1000
            iterations_done += 1

    duration = time.time() - start
    print(
        f"IO work: {io_percentage}, CPU work: {cpu_percentage}, time: {duration:.1f} seconds",
        flush=True,
    )

    start_response("204 No Content", [])
    return [b""]
