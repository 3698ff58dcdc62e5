"""A JSON-lines driver of this SDK's E2E core, for interoperability tests run as a subprocess
(the TypeScript SDK's tests drive it). One request per stdin line, one answer per stdout line:

    python -m caas_client.e2e.driver

Every request has "cmd" and "device" (a name local to this process; several devices may live in
one process); "id", when given, is echoed. Plaintexts are UTF-8 ("plaintext") or base64
("plaintext_b64"); message bodies are base64. A failure answers {"error": <exception class, e.g.
"ReplayedMessage">, "message": …}. Commands:

    create           user_id, device_id, one_time_prekeys?=0, identity_seed? (b64)
                     -> {"registration": PUT body of the devices API}
    bundle           one_time_prekey?=true -> {"bundle"}: hands out the lowest one-time prekey not
                     yet handed out (as the server does), or none
    start_session    bundle -> {}
    encrypt          to ("user/device"), plaintext, bundle? (starts the session if none) -> {"body"}
    decrypt          from, body -> {"plaintext", "plaintext_b64"}
    encrypt_group    channel_id, plaintext, recipients [addresses], bundles? {address: bundle}
                     -> {"pairwise": {address: body}, "group": body}
    decrypt_group    from, channel_id, body -> {"plaintext", "plaintext_b64"}
    rotate_signed_prekey -> {"signed_prekey"};  new_one_time_prekeys count -> {"one_time_prekeys"}
    save -> {"state"};  load state -> {}
"""

from __future__ import annotations

import json
import sys
from typing import Any

from caas_client.e2e import primitives as p
from caas_client.e2e.device import Device
from caas_client.e2e.errors import E2EError
from caas_client.e2e.keys import Bundle, IdentityKey


class Driver:
    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.handed_out: dict[str, set[int]] = {}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd, name = req["cmd"], str(req.get("device", "default"))
        if cmd == "create":
            seed = req.get("identity_seed")
            device = Device.create(
                str(req["user_id"]),
                str(req["device_id"]),
                int(req.get("one_time_prekeys", 0)),
                IdentityKey(p.unb64(seed)) if seed else None,
            )
            self.devices[name], self.handed_out[name] = device, set()
            return {"registration": device.registration()}
        if cmd == "load":
            self.devices[name] = Device.from_json(req["state"])
            self.handed_out.setdefault(name, set())
            return {}
        device = self.devices[name]
        if cmd == "bundle":
            return {"bundle": self._bundle(name, device, bool(req.get("one_time_prekey", True))).to_json()}
        if cmd == "start_session":
            device.start_session(Bundle.from_json(req["bundle"]))
            return {}
        if cmd == "encrypt":
            peer = str(req["to"])
            if not device.has_session(peer) and req.get("bundle"):
                device.start_session(Bundle.from_json(req["bundle"]))
            return {"body": p.b64(device.encrypt(peer, _plaintext(req)))}
        if cmd == "decrypt":
            return _answer(device.decrypt(str(req["from"]), p.unb64(req["body"])))
        if cmd == "encrypt_group":
            bundles = {a: Bundle.from_json(b) for a, b in (req.get("bundles") or {}).items()}
            pairwise, group = device.encrypt_group(
                str(req["channel_id"]), _plaintext(req), [str(r) for r in req["recipients"]], bundles
            )
            return {"pairwise": {a: p.b64(b) for a, b in pairwise.items()}, "group": p.b64(group)}
        if cmd == "decrypt_group":
            return _answer(device.decrypt_group(str(req["from"]), str(req["channel_id"]), p.unb64(req["body"])))
        if cmd == "rotate_signed_prekey":
            return {"signed_prekey": device.rotate_signed_prekey()}
        if cmd == "new_one_time_prekeys":
            return {"one_time_prekeys": device.new_one_time_prekeys(int(req["count"]))}
        if cmd == "save":
            return {"state": device.to_json()}
        raise ValueError(f"unknown cmd {cmd!r}")

    def _bundle(self, name: str, device: Device, with_opk: bool) -> Bundle:
        free = sorted(set(device.one_time_prekeys) - self.handed_out[name]) if with_opk else []
        if free:
            self.handed_out[name].add(free[0])
            return device.bundle(free[0])
        return device.bundle(None)


def _plaintext(req: dict[str, Any]) -> bytes:
    if "plaintext_b64" in req:
        return p.unb64(req["plaintext_b64"])
    return str(req["plaintext"]).encode()


def _answer(plaintext: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"plaintext_b64": p.b64(plaintext)}
    try:
        out["plaintext"] = plaintext.decode()
    except UnicodeDecodeError:
        out["plaintext"] = None
    return out


def main() -> None:
    driver = Driver()
    for line in sys.stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            answer = driver.handle(req)
        except (E2EError, KeyError, ValueError, TypeError) as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
        if "id" in req:
            answer["id"] = req["id"]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
