"""A small authoritative-looking DNS server for hermetic tests (dnslib for the
wire format, our own UDP and TCP loops for control).

    srv = DnsServer(zone_text)          # RFC 1035 zone file text, absolute names
    srv.servfail.add("servfail.test.")  # names (and their subdomains) that SERVFAIL
    srv.drop.add("drop.test.")          # names whose queries get no answer
    srv.delay["slow.test."] = 1.0       # names answered only after that long
    srv.start(); ... srv.port ...; srv.stop()
    srv.count("cache.test.", "MX")      # queries seen for (name, type)

Names not in the zone get NXDOMAIN unless some name below them exists (then
NODATA). CNAMEs are chased inside the zone, as a recursive server would.
UDP answers longer than the client's EDNS size (512 without EDNS), or any
name in `srv.truncate`, are sent with TC set so that the client retries over
TCP. The server answers with RA set, like the forwarder it stands in for.
"""
import socketserver
import struct
import threading
import time
from collections import Counter

from dnslib import QTYPE, RCODE, RR, DNSRecord


class _Udp(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class _Tcp(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _under(name, suffixes):
    name = name.lower()
    return any(name == s or name.endswith("." + s) for s in suffixes)


class DnsServer:
    def __init__(self, zone_text="", host="127.0.0.1"):
        self.host = host
        self.port = 0
        self.records = [rr for rr in RR.fromZone(zone_text)] if zone_text else []
        self.servfail = set()
        self.drop = set()
        self.delay = {}
        self.truncate = set()
        self.counts = Counter()
        self.tcp_counts = Counter()
        self._lock = threading.Lock()
        self._servers = []

    # -- zone lookups ------------------------------------------------------
    def _find(self, name, qtype):
        return [rr for rr in self.records
                if str(rr.rname).lower() == name.lower() and (qtype is None or rr.rtype == qtype)]

    def _exists(self, name):
        name = name.lower()
        return any(str(rr.rname).lower() == name or str(rr.rname).lower().endswith("." + name)
                   for rr in self.records)

    def answer(self, request, tcp=False):
        """The reply to a parsed request, or None to drop it."""
        q = request.q
        name = str(q.qname)
        qtype = q.qtype
        with self._lock:
            self.counts[(name.lower(), QTYPE[qtype])] += 1
            if tcp:
                self.tcp_counts[(name.lower(), QTYPE[qtype])] += 1
        if _under(name, {s.lower() for s in self.drop}):
            return None
        for d, secs in list(self.delay.items()):
            if _under(name, {d.lower()}):
                time.sleep(secs)
        reply = request.reply(ra=1, aa=1)
        if _under(name, {s.lower() for s in self.servfail}):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        seen = set()
        while True:
            if name.lower() in seen:
                break
            seen.add(name.lower())
            found = self._find(name, qtype)
            if found:
                for rr in found:
                    reply.add_answer(rr)
                break
            cname = self._find(name, QTYPE.CNAME)
            if cname and qtype != QTYPE.CNAME:
                reply.add_answer(cname[0])
                name = str(cname[0].rdata.label)
                if _under(name, {s.lower() for s in self.servfail}):
                    reply.header.rcode = RCODE.SERVFAIL
                    return reply
                continue
            if not self._exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
            break
        return reply

    def count(self, name, qtype):
        with self._lock:
            return self.counts[(name.lower(), qtype)]

    def tcp_count(self, name, qtype):
        with self._lock:
            return self.tcp_counts[(name.lower(), qtype)]

    # -- transport ---------------------------------------------------------
    def _handle_udp(self, data, sock, addr):
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return
        reply = self.answer(request)
        if reply is None:
            return
        size = 512
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                size = max(512, rr.rclass)
        wire = reply.pack()
        if len(wire) > size or _under(str(request.q.qname), {s.lower() for s in self.truncate}):
            short = request.reply(ra=1, aa=1)
            short.header.tc = 1
            wire = short.pack()
        sock.sendto(wire, addr)

    def _handle_tcp(self, rfile, wfile):
        while True:
            hdr = rfile.read(2)
            if len(hdr) < 2:
                return
            (n,) = struct.unpack("!H", hdr)
            data = rfile.read(n)
            if len(data) < n:
                return
            try:
                request = DNSRecord.parse(data)
            except Exception:
                return
            reply = self.answer(request, tcp=True)
            if reply is None:
                continue
            wire = reply.pack()
            wfile.write(struct.pack("!H", len(wire)) + wire)
            wfile.flush()

    def start(self):
        outer = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                outer._handle_udp(data, sock, self.client_address)

        class TcpHandler(socketserver.StreamRequestHandler):
            def handle(self):
                outer._handle_tcp(self.rfile, self.wfile)

        # One free port for both transports: retry if TCP's is taken.
        for _ in range(20):
            udp = _Udp((self.host, 0), UdpHandler)
            port = udp.server_address[1]
            try:
                tcp = _Tcp((self.host, port), TcpHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for the DNS server")
        self.port = port
        self._servers = [udp, tcp]
        for s in self._servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        return self

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []

    @property
    def forwarder(self):
        return f"{self.host}@{self.port}"
