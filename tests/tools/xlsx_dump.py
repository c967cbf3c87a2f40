"""Reads an .xlsx with openpyxl (an independent reader) and prints it as JSON for the tests.

usage: xlsx_dump.py FILE
Prints {"sheets": [names], "cells": {sheet: [[cell, ...], ...]}, "freeze": {sheet: "A2"},
"filter": {sheet: "A1:I9"}, "charts": [{"title": ..., "series": [{"name": ref, "cat": ref,
"val": ref}]}]}; a cell is {"n": number} | {"b": bool} | {"t": "YYYY-MM-DDTHH:MM:SS.fff"} |
{"s": text} | null. Charts come from the chart XML parts (openpyxl does not load charts).
"""
import datetime, json, re, sys, zipfile

import openpyxl


def cell(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return {"b": v}
    if isinstance(v, (int, float)):
        return {"n": v}
    if isinstance(v, datetime.datetime):
        return {"t": v.isoformat(timespec="milliseconds")}
    return {"s": str(v)}


def main():
    path = sys.argv[1]
    wb = openpyxl.load_workbook(path)
    out = {"sheets": wb.sheetnames, "cells": {}, "freeze": {}, "filter": {}, "charts": []}
    for ws in wb.worksheets:
        out["cells"][ws.title] = [[cell(v) for v in row] for row in ws.iter_rows(values_only=True)]
        out["freeze"][ws.title] = ws.freeze_panes
        out["filter"][ws.title] = ws.auto_filter.ref
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if re.match(r"xl/charts/chart\d+\.xml$", n)):
            xml = z.read(name).decode()
            title = "".join(re.findall(r"<a:t>([^<]*)</a:t>", xml.split("<c:plotArea>")[0]))
            series = []
            for s in re.findall(r"<c:ser>(.*?)</c:ser>", xml, re.S):
                ref = lambda tag: (re.search(rf"<c:{tag}>.*?<c:f>([^<]*)</c:f>", s, re.S) or [None, None])[1]
                series.append({"name": ref("tx"), "cat": ref("cat"), "val": ref("val")})
            out["charts"].append({"part": name, "title": title, "series": series})
    print(json.dumps(out))


main()
