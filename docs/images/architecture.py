"""Draws docs/images/architecture.svg: Annal's processes, ports and storage, laid out by hand.

Run ``python docs/images/architecture.py docs/images/architecture.svg`` after changing it;
``rsvg-convert -o /tmp/a.png docs/images/architecture.svg`` renders it for a look.
"""
import sys
W, H = 1200, 840
out = []
def add(s): out.append(s)
def esc(s): return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
def box(x, y, w, h, fill, stroke, rx=8, dash=None):
    d = f' stroke-dasharray="{dash}"' if dash else ''
    add(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{d}/>')
def text(x, y, s, size=13, weight="normal", anchor="start", fill="#1a1a1a", family="DejaVu Sans, Arial, sans-serif"):
    add(f'<text x="{x}" y="{y}" font-family="{family}" font-size="{size}" font-weight="{weight}" text-anchor="{anchor}" fill="{fill}" xml:space="preserve">{esc(s)}</text>')
def mono(x, y, s, size=11.5, fill="#1a1a1a", anchor="start"):
    text(x, y, s, size=size, family="DejaVu Sans Mono, Consolas, monospace", fill=fill, anchor=anchor)
def line(pts, color, dash=None, end=True, start=False, width=2):
    d = f' stroke-dasharray="{dash}"' if dash else ''
    e = f' marker-end="url(#a-{color[1:]})"' if end else ''
    s = f' marker-start="url(#s-{color[1:]})"' if start else ''
    p = " ".join(f"{x},{y}" for x, y in pts)
    add(f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="{width}"{d}{e}{s}/>')

BLUE, GREEN, ORANGE, PURPLE, GREY = "#1f62b4", "#1e8a3c", "#b85f00", "#7b3fa0", "#666666"
add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">')
add('<defs>')
for c in (BLUE, GREEN, ORANGE, PURPLE, GREY):
    add(f'<marker id="a-{c[1:]}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>')
    add(f'<marker id="s-{c[1:]}" viewBox="0 0 10 10" refX="1" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M10,0 L0,5 L10,10 z" fill="{c}"/></marker>')
add('</defs>')
add(f'<rect width="{W}" height="{H}" fill="#ffffff"/>')
text(20, 30, "Annal: processes, ports and storage", size=18, weight="bold")

# --- clients (top) ---
box(20, 48, 300, 100, "#eaf1fb", BLUE)
text(32, 70, "Producers", size=14, weight="bold", fill=BLUE)
text(32, 90, "client.Producer · annal produce")
text(32, 107, "annal-bench produce")
text(32, 125, "record accumulator → a batch per partition;", size=11.5, fill=GREY)
text(32, 140, "leaders from gRPC Metadata or ZooKeeper", size=11.5, fill=GREY)

box(345, 48, 210, 100, "#f2f2f2", GREY)
text(357, 70, "Admin", size=14, weight="bold", fill=GREY)
text(357, 90, "client.Admin · annal topics")
text(357, 107, "create · list · describe · delete")
text(357, 125, "gRPC to any broker", size=11.5, fill=GREY)

box(580, 48, 300, 100, "#eaf6ee", GREEN)
text(592, 70, "Consumers", size=14, weight="bold", fill=GREEN)
text(592, 90, "client.Consumer · annal consume")
text(592, 107, "annal-bench consume")
text(592, 125, "fetch from each partition's leader;", size=11.5, fill=GREY)
text(592, 140, "a group shares partitions via ZooKeeper", size=11.5, fill=GREY)

# --- brokers (middle) ---
BY = 262
bx = [20, 310, 600]
for i, x in enumerate(bx, start=1):
    box(x, BY, 270, 236, "#fbfbfb", "#333333")
    # gRPC port (left column)
    box(x + 10, BY + 10, 122, 92, "#eaf1fb", BLUE, rx=5)
    text(x + 18, BY + 28, "gRPC :9092", size=12.5, weight="bold", fill=BLUE)
    for k, s in enumerate(["Metadata", "Create/DeleteTopics", "Produce(Stream)", "ListOffsets, Fetch"]):
        text(x + 18, BY + 45 + 15 * k, s, size=10.5)
    # data port (right column)
    box(x + 138, BY + 10, 122, 92, "#eaf6ee", GREEN, rx=5)
    text(x + 146, BY + 28, "data :9093", size=12.5, weight="bold", fill=GREEN)
    for k, s in enumerate(["binary frames", "FETCH: long-poll,", "sendfile() of .log", "PRODUCE"]):
        text(x + 146, BY + 45 + 15 * k, s, size=11)
    text(x + 12, BY + 124, f"broker {i}", size=14, weight="bold")
    text(x + 258, BY + 124, "annal broker start", size=11, fill=GREY, anchor="end")
    # metrics
    box(x + 10, BY + 132, 250, 24, "#f2f2f2", GREY, rx=5)
    text(x + 18, BY + 149, "metrics :9094  Prometheus /metrics", size=11.5, fill=GREY)
    # log manager
    box(x + 10, BY + 162, 250, 64, "#fff7e8", ORANGE, rx=5)
    text(x + 18, BY + 180, "logs: one Log per partition it leads", size=11.5, weight="bold")
    text(x + 18, BY + 197, "append → active segment + index", size=11)
    text(x + 18, BY + 213, "roll · retention · flush · recover", size=11)

# --- ZooKeeper (right) ---
zx, zy, zw, zh = 905, 170, 280, 370
box(zx, zy, zw, zh, "#f6effa", PURPLE)
text(zx + 12, zy + 24, "ZooKeeper :2181", size=14, weight="bold", fill=PURPLE)
text(zx + 12, zy + 42, "cluster mode; chroot /annal", size=11.5, fill=GREY)
zlines = [
    ("/brokers/ids/<id>", "ephemeral: host, ports"),
    ("/brokers/topics/<topic>", "partition → leader, config"),
    ("/controller", "ephemeral: the elected broker"),
    ("/controller_election/…", "kazoo Election contenders"),
    ("/admin/delete_topics/<t>", "deletes not yet done"),
    ("/consumers/<g>/ids/<member>", "ephemeral group members"),
    ("/consumers/<g>/owners/<t>/<p>", "member reading p"),
    ("/consumers/<g>/offsets/<t>/<p>", "committed offset (next to read)"),
]
y = zy + 68
for path, note in zlines:
    mono(zx + 12, y, path, size=10.8)
    text(zx + 24, y + 15, note, size=11, fill=GREY)
    y += 36

# --- storage (bottom) ---
sy = 585
box(20, sy, 860, 240, "#fffdf6", ORANGE, dash="5,4")
text(32, sy + 24, "Data dir of each broker (--data-dir): a folder per partition it leads", size=14, weight="bold", fill=ORANGE)
rows = [
    ("<data_dir>/", ""),
    ("  .lock", "flock: one broker per data dir"),
    ("  topics.json", "standalone mode: topics and configs"),
    ("  recovery-point-offset-checkpoint", "per partition: offset known flushed"),
    ("  log-start-offset-checkpoint", "per partition: first offset kept"),
    ("  .annal_cleanshutdown", "present only after a clean stop"),
    ("  orders-0/", "<topic>-<partition>"),
    ("    00000000000000000000.log", "RecordBatch v2 batches, back to back"),
    ("    00000000000000000000.index", "offset → position in .log (mmap)"),
    ("    00000000000000000000.timeindex", "timestamp → offset"),
    ("    00000000000000052310.log", "next segment: base offset 52310"),
]
y = sy + 50
for path, note in rows:
    mono(40, y, path, size=11.5)
    if note:
        text(335, y, note, size=11.5, fill=GREY)
    y += 17

# --- where offsets live ---
lx, ly = 905, sy
box(lx, ly, 280, 240, "#ffffff", "#aaaaaa")
text(lx + 12, ly + 24, "Where offsets live", size=13, weight="bold")
notes = [
    "Record offsets: each batch header",
    "(base offset, record count) in the .log;",
    "the .index maps offset → file position.",
    "Log end offset: the last batch, found",
    "again by recovery after a crash.",
    "Group commits: ZooKeeper,",
    "/consumers/<g>/offsets/<t>/<p>.",
    "No group: the consumer's own position",
    "(seek, auto_offset_reset).",
]
y = ly + 46
for n in notes:
    text(lx + 12, y, n, size=11.5)
    y += 19

# --- arrows ---
# producers bus (blue): down from producers, across, drop to each gRPC box
PB = 190
line([(100, 148), (100, PB)], BLUE, end=False)
line([(100, PB), (bx[2] + 165, PB)], BLUE, end=False)
for x in bx:
    line([(x + 165, PB), (x + 165, BY + 10)], BLUE)
text(108, PB - 6, "PRODUCE on the data port, to each partition's leader", size=11.5, fill=BLUE)
# consumers bus (green)
CB = 225
line([(850, 148), (850, CB)], GREEN, end=False)
line([(850, CB), (bx[0] + 235, CB)], GREEN, end=False)
for x in bx:
    line([(x + 235, CB), (x + 235, BY + 10)], GREEN)
text(842, CB - 6, "FETCH (sendfile)", size=11.5, fill=GREEN, anchor="end")
# admin: to any broker (one arrow, dashed)
line([(420, 148), (420, BY + 10)], GREY, dash="5,4")
text(414, 246, "Metadata, admin (gRPC)", size=11, fill=GREY, anchor="end")
# consumers <-> ZooKeeper
line([(880, 98), (zx + 140, 98), (zx + 140, zy)], PURPLE, dash="6,4", start=True)
text(zx + 148, 128, "join group, own", size=11, fill=PURPLE)
text(zx + 148, 142, "partitions, commit", size=11, fill=PURPLE)
# brokers <-> ZooKeeper: bus under the brokers
ZB = 520
line([(zx, ZB), (bx[0] + 230, ZB)], PURPLE, dash="6,4", end=False, start=True)
for x in bx:
    line([(x + 230, ZB), (x + 230, BY + 236)], PURPLE, dash="6,4")
text(bx[0] + 240, ZB + 17, "register, elect", size=11, fill=PURPLE)
text(bx[0] + 240, ZB + 31, "controller, watch", size=11, fill=PURPLE)
# brokers -> storage
for x in bx:
    line([(x + 100, BY + 236), (x + 100, sy)], ORANGE)
text(bx[0] + 108, sy - 12, "append, read, flush", size=11, fill=ORANGE)
add('</svg>')
open(sys.argv[1], "w").write("\n".join(out) + "\n")
