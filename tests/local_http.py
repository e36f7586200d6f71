"""Helpers for tests that start TensorBoard as a separate process and ask it over HTTP."""

import subprocess
import urllib.error
import urllib.request

from demo import localnet


# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port = localnet.free_port


def get(url, timeout=10):
    """(status, body bytes, content type) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get_content_type()


def stop(process, timeout=15):
    """Terminates `process`, killing it if it does not exit in `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
