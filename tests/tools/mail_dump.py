#!/usr/bin/env python3
"""Prints the messages of a Maildir (as written by aiosmtpd's Mailbox handler) as one JSON list:
subject, from, to, the plain-text body, and each attachment's name, type, size and SHA-256.
Python's own e-mail parser, independent of the Rust code that wrote the messages.

usage: mail_dump.py MAILDIR
"""
import hashlib, json, mailbox, sys
from email import policy
from email.parser import BytesParser

out = []
for key, msg in mailbox.Maildir(sys.argv[1], create=False).items():
    m = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    body = m.get_body(preferencelist=("plain",))
    atts = []
    for part in m.iter_attachments():
        data = part.get_payload(decode=True) or b""
        atts.append({"filename": part.get_filename(), "content_type": part.get_content_type(),
                     "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    out.append({"subject": m["subject"], "from": m["from"], "to": m["to"],
                "text": body.get_content() if body is not None else "", "attachments": atts})
print(json.dumps(out))
