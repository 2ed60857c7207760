"""The class-data archive every Java test's JVM maps: the JDK's default classes plus those competitive
programs load beyond them (Scanner, regex, collections, lambdas, string concatenation, formatting...).

A JVM start reads each class outside its archive from the JDK's module image, parses and links it;
from an archive it maps them ready-made. The JDK's own archive holds about 1,400 classes of a generic
start-up; a typical CodeContests program loads 10-20 more, and a lambda or a string concatenation
spins classes at run time that an archive holds pre-generated (docs/sandbox_engine.md, "Java start").

How it is made, and why it is safe to share:
- from the JDK's default class list and the classes a fixed warm-up program (``WARMUP_JAVA`` below,
  never a program under test) loads, dumped by ``java -Xshare:dump``: no program's code or data can be
  in it, so sharing it between programs leaks nothing;
- once per host, JDK build and JVM flags (the name is a content address of those), by the service
  process, in the background at the first Java request (tests run with the JDK's own archive until it
  is ready); checked (the warm-up must run with it under ``-Xshare:on``) before it is moved, atomically,
  into the binary cache: a program sees it read-only at /sbx/bin and runs as another uid, so no program
  can write it;
- a missing, stale or damaged archive is never a failure: under ``-Xshare:auto`` the JVM checks the
  archive's header (magic, JVM build, flags, the module image's size and time) and runs without it.
  It does not check the rest: a truncated archive crashes the JVM (SIGBUS, JDK 17), so each copy's size
  and sha256 are checked against those recorded at build, once per process and file (then its inode
  and size at every request); a copy that differs is replaced before any test maps it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import threading

log = logging.getLogger("sandbox.jvm_archive")

# Loads what solutions commonly use (readers, tokenizers, writers, formatting, boxing, collections,
# sorting with comparators, lambdas and method references, streams, big numbers, string switches and
# concatenation, a thread with a big stack, common exceptions) and prints a fixed line. Trusted code.
WARMUP_JAVA = r"""
import java.io.*;
import java.math.*;
import java.util.*;
import java.util.function.*;
import java.util.stream.*;

public class CdsWarmup {
    public static void main(String[] args) throws Exception {
        String text = "3 4\n5 6 7\nhello world\n1.5 2.25\n";
        Scanner sc = new Scanner(new ByteArrayInputStream(text.getBytes()));
        int a = sc.nextInt(); long b = sc.nextLong(); sc.nextLine();
        String line = sc.nextLine(); String w = sc.next(); sc.next(); double d = sc.nextDouble();
        sc.hasNextInt(); sc.hasNextLine(); sc.hasNext();
        BufferedReader br = new BufferedReader(new InputStreamReader(new ByteArrayInputStream(text.getBytes())));
        StringTokenizer st = new StringTokenizer(br.readLine());
        int x = Integer.parseInt(st.nextToken()); long y = Long.parseLong(st.nextToken());
        String[] parts = br.readLine().trim().split("\\s+");
        String[] parts2 = line.split(" ");
        double z = Double.parseDouble("2.5");
        StreamTokenizer tok = new StreamTokenizer(new BufferedReader(new StringReader(text)));
        tok.nextToken();
        DataInputStream din = new DataInputStream(new BufferedInputStream(new ByteArrayInputStream(text.getBytes()), 1 << 16));
        din.read();
        StringWriter sw = new StringWriter();
        PrintWriter out = new PrintWriter(new BufferedWriter(new OutputStreamWriter(new ByteArrayOutputStream())));
        PrintWriter pw = new PrintWriter(sw);
        PrintStream ps = new PrintStream(new BufferedOutputStream(new ByteArrayOutputStream()));
        StringBuilder sb = new StringBuilder();
        sb.append(a).append(' ').append(b).append(line).append(d).append('\n').insert(0, "x").setLength(1);
        String s = "v=" + a + " " + b + " " + d + " " + w + " " + x + y + z + parts.length + parts2.length + 'c' + true;
        pw.printf("%d %s %.6f%n", a, s, d);
        ps.printf("%.2f %d%n", d, b);
        ps.println(String.format("%.9f", d) + String.format("%5d|%-3s|%x", a, w, a));
        out.println(a);
        out.print(s);
        out.flush();
        ps.flush();
        switch (w) { case "hello": sb.append(1); break; case "world": sb.append(2); break; default: break; }

        int[] ia = {5, 3, 1}; long[] la = {5L, 3L}; double[] da = {2.0, 1.0}; char[] ca = s.toCharArray();
        Arrays.sort(ia); Arrays.sort(la); Arrays.sort(da); Arrays.sort(ca); Arrays.fill(ia, 0);
        int[] copy = Arrays.copyOf(ia, 5); Arrays.binarySearch(la, 3L); Arrays.toString(ia); Arrays.equals(ia, copy);
        Integer[] boxed = {3, 1, 2};
        Arrays.sort(boxed, Collections.reverseOrder());
        Arrays.sort(boxed, (p, q) -> q - p);
        int[][] pairs = {{1, 2}, {0, 1}};
        Arrays.sort(pairs, Comparator.comparingInt(p -> p[0]));
        Arrays.sort(pairs, (p, q) -> Integer.compare(p[1], q[1]));
        long[][] lp = {{1, 2}, {0, 1}};
        Arrays.sort(lp, Comparator.comparingLong((long[] p) -> p[0]).thenComparingLong(p -> p[1]));
        List<Integer> list = new ArrayList<>(Arrays.asList(boxed));
        Collections.sort(list); list.sort(Comparator.reverseOrder()); Collections.reverse(list);
        Collections.max(list); Collections.min(list); Collections.swap(list, 0, 1); Collections.shuffle(list, new Random(1));
        LinkedList<Integer> ll = new LinkedList<>(list); ll.addFirst(1); ll.pollLast();
        ArrayDeque<Integer> dq = new ArrayDeque<>(); dq.offer(1); dq.push(2); dq.poll(); dq.pollLast(); dq.peekFirst();
        Stack<Integer> stack = new Stack<>(); stack.push(1); stack.pop();
        Queue<int[]> queue = new LinkedList<>(); queue.add(new int[]{1}); queue.poll();
        PriorityQueue<long[]> pq = new PriorityQueue<>((p, q) -> Long.compare(p[0], q[0]));
        pq.add(new long[]{1, 2}); pq.poll();
        PriorityQueue<Integer> pq2 = new PriorityQueue<>(Collections.reverseOrder()); pq2.add(1); pq2.peek();
        Map<Integer, Integer> hm = new HashMap<>(); hm.put(1, 2); hm.merge(1, 1, Integer::sum);
        hm.getOrDefault(3, 0); hm.computeIfAbsent(5, k -> 1); hm.put(2, hm.getOrDefault(2, 0) + 1);
        hm.entrySet().iterator().next().getValue(); hm.keySet(); hm.values(); hm.containsKey(1); hm.remove(1);
        Map<Long, Long> lm = new HashMap<>(); lm.put(1L, 2L); lm.merge(1L, 1L, Long::sum);
        TreeMap<Long, Integer> tm = new TreeMap<>(); tm.put(1L, 1); tm.floorKey(2L); tm.ceilingEntry(0L);
        tm.firstKey(); tm.lastEntry(); tm.headMap(1L); tm.tailMap(0L, true); tm.higherKey(0L); tm.pollFirstEntry();
        Set<String> hs = new HashSet<>(); hs.add(s); hs.contains(w);
        TreeSet<Integer> ts = new TreeSet<>(list); ts.floor(2); ts.higher(1); ts.pollFirst(); ts.descendingSet();
        TreeMap<String, List<Integer>> ms = new TreeMap<>(); ms.computeIfAbsent("a", k -> new ArrayList<>()).add(1);
        LinkedHashMap<String, Integer> lhm = new LinkedHashMap<>(); lhm.put("a", 1);
        LinkedHashSet<Integer> lhs = new LinkedHashSet<>(); lhs.add(1);
        Map<Character, List<Integer>> groups = new HashMap<>();
        groups.computeIfAbsent('a', k -> new ArrayList<>()).add(1);
        BitSet bs = new BitSet(); bs.set(3); bs.cardinality();
        Iterator<Integer> it = list.iterator(); it.next();
        for (Map.Entry<Integer, Integer> e : hm.entrySet()) e.getKey();
        List<Integer> evens = list.stream().filter(v -> v % 2 == 0).map(v -> v * 2).collect(Collectors.toList());
        int sum = IntStream.range(0, 10).map(v -> v * v).sum();
        long cnt = Arrays.stream(ia).boxed().sorted().count();
        String joined = list.stream().map(String::valueOf).collect(Collectors.joining(" "));
        Arrays.stream(la).max(); Arrays.stream(ia).sum(); Stream.of(1, 2).mapToInt(Integer::intValue).toArray();
        Map<Integer, Long> freq = list.stream().collect(Collectors.groupingBy(v -> v, Collectors.counting()));
        Optional<Integer> opt = list.stream().reduce(Integer::sum);
        Function<Integer, Integer> f = v -> v + 1; BiFunction<Integer, Integer, Integer> g = Math::max;
        Supplier<List<Integer>> sup = ArrayList::new; Predicate<String> pr = String::isEmpty;
        IntBinaryOperator op = (p, q) -> p + q; op.applyAsInt(1, 2);
        Runnable r = () -> sb.append(0); r.run();
        BigInteger bi = BigInteger.valueOf(a).multiply(new BigInteger("123456789012345678901234567890"))
                .mod(BigInteger.TEN.pow(9)).add(BigInteger.ONE).modPow(BigInteger.TWO, BigInteger.valueOf(1000000007L));
        BigDecimal bd = new BigDecimal("1.5").setScale(3, RoundingMode.HALF_UP).add(BigDecimal.ONE);
        Math.max(a, b); Math.abs(-1); Math.sqrt(2); Math.pow(2, 3); Math.floorMod(-1, 3); Math.log(2); Math.ceil(1.5);
        Long.numberOfLeadingZeros(Long.MAX_VALUE); Math.round(2.5); Math.hypot(3, 4); Math.floorDiv(-3, 2);
        Character.isDigit('1'); Character.isLetter('a'); Character.toUpperCase('a'); Integer.toBinaryString(5);
        Integer.bitCount(5); Long.numberOfTrailingZeros(8); Integer.valueOf(3).compareTo(4); String.valueOf(ca);
        Integer.parseInt("101", 2); Long.toString(5L, 2); Integer.compare(Integer.MAX_VALUE, Integer.MIN_VALUE);
        s.substring(1).indexOf("x"); s.charAt(0); s.equals(w); s.compareTo(w); s.toLowerCase(); s.trim();
        s.chars().filter(Character::isDigit).count(); new StringBuilder(s).reverse().toString(); s.replace("a", "b");
        String.join(",", "a", "b"); s.matches("[a-z]+"); s.repeat(2); s.isBlank(); s.contains("v"); s.startsWith("v");
        Objects.hash(1, 2); Objects.equals(a, b); new Random(1).nextInt(10); System.currentTimeMillis(); System.nanoTime();
        List<int[]> adj = new ArrayList<>(); adj.add(new int[]{1}); List<List<Integer>> g2 = new ArrayList<>();
        g2.add(new ArrayList<>()); Collections.unmodifiableList(list); List.of(1, 2); Map.of(1, 2); Set.of(1);
        @SuppressWarnings("unchecked") ArrayList<Integer>[] buckets = new ArrayList[2]; buckets[0] = new ArrayList<>();
        try { Object[] arr = new Object[1]; Object o = arr[ia.length]; } catch (ArrayIndexOutOfBoundsException e) { e.getMessage(); }
        try { Integer.parseInt("x"); } catch (NumberFormatException e) { e.getMessage(); }
        try { throw new IllegalStateException("x"); } catch (RuntimeException e) { e.getMessage(); }
        try { throw new IOException("x"); } catch (IOException e) { new UncheckedIOException(e).getMessage(); }
        try { new ArrayList<Integer>().iterator().next(); } catch (NoSuchElementException e) { e.getMessage(); }
        try { new Scanner("x").nextInt(); } catch (InputMismatchException e) { e.getMessage(); }
        try { Object o = null; o.hashCode(); } catch (NullPointerException e) { e.getMessage(); }
        try { int q = ia.length - 3; q = 1 / q; } catch (ArithmeticException e) { e.getMessage(); }
        Thread t = new Thread(null, () -> sb.append(1), "w", 1 << 26); t.start(); t.join();
        System.out.println(sb.length() + s.length() + evens.size() + sum + cnt + joined.length() + opt.orElse(0) + f.apply(1)
                + g.apply(1, 2) + sup.get().size() + (pr.test(s) ? 1 : 0) + bi.intValue() + bd.scale() + tok.ttype
                + freq.size() + sw.toString().length() + " warm");
    }
}
"""
WARMUP_CLASS = "CdsWarmup"
WARMUP_TAIL = " warm"  # how the warm-up's one line of output ends

# Where this host keeps the archives it built (one per JDK build and flags), beside the default binary
# cache; each binary cache in use gets a copy (programs can only see the binary cache).
STORE = os.path.join(tempfile.gettempdir(), f"codealign-sandbox-{os.geteuid()}", "jvm")

_lock = threading.Lock()
_started: set[str] = set()  # archives this process is building or failed to build (never retried)


def _run(argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} exited with {out.returncode}: {(out.stderr or out.stdout)[-2000:]}")
    return out


def _identity(java: str) -> str:
    """The exact JVM build (version, build date): an archive fits one build only."""
    try:
        out = subprocess.run([java, "-Xinternalversion"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


_names: dict[tuple[str, tuple[str, ...]], str | None] = {}


def archive_name(java: str, flags: tuple[str, ...]) -> str | None:
    """The archive's content address: the JVM build, its module image, the flags, the warm-up."""
    key = (java, flags)
    if key not in _names:
        ident = _identity(java)
        home = os.path.dirname(os.path.dirname(java))
        try:
            st = os.stat(os.path.join(home, "lib", "modules"))
            image = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            image = ""
        if not ident or not image:
            _names[key] = None
        else:
            h = hashlib.sha256()
            for part in (ident, image, " ".join(flags), WARMUP_JAVA):
                h.update(part.encode())
                h.update(b"\0")
            _names[key] = f"jvm-{h.hexdigest()[:40]}.jsa"
    return _names[key]


def _class_list(java: str, loaded: str) -> str:
    """The JDK's default class list (what its own archive holds) plus the JDK classes the warm-up
    loaded; the warm-up's own classes and lambdas are left out (the archive holds JDK classes only,
    so it fits any program's class path)."""
    lines: list[str] = []
    seen: set[str] = set()
    default = os.path.join(os.path.dirname(os.path.dirname(java)), "lib", "classlist")
    for path in (default, loaded):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or WARMUP_CLASS in line or line in seen:
                continue
            seen.add(line)
            lines.append(line)
    return "\n".join(lines) + "\n"


def build(java: str, javac: str, flags: tuple[str, ...], dest: str) -> None:
    """Dump the archive for ``flags`` to ``dest`` (atomically), after checking that the warm-up runs
    with it under -Xshare:on. Raises on any failure (nothing is left at ``dest`` then)."""
    base = [f for f in flags if not f.startswith("-Xshare")]
    with tempfile.TemporaryDirectory(prefix="codealign-jvm-archive-") as tmp:
        with open(os.path.join(tmp, f"{WARMUP_CLASS}.java"), "w") as f:
            f.write(WARMUP_JAVA)
        _run([javac, "-J-Xmx512m", "-encoding", "UTF-8", "-d", tmp, os.path.join(tmp, f"{WARMUP_CLASS}.java")])
        loaded = os.path.join(tmp, "loaded.lst")
        _run([java, *base, "-Xshare:off", f"-XX:DumpLoadedClassList={loaded}", "-cp", tmp, WARMUP_CLASS])
        with open(os.path.join(tmp, "classes.lst"), "w") as f:
            f.write(_class_list(java, loaded))
        archive = os.path.join(tmp, "classes.jsa")
        _run([java, *base, "-Xshare:dump", f"-XX:SharedClassListFile={tmp}/classes.lst",
              f"-XX:SharedArchiveFile={archive}"])
        check = _run([java, *base, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", tmp, WARMUP_CLASS])
        if not check.stdout.strip().endswith(WARMUP_TAIL):
            raise RuntimeError(f"the warm-up printed {check.stdout[-200:]!r} with the archive")
        digest = f"{os.path.getsize(archive)} {_sha256(archive)}\n"
        with open(dest + ".tmp-digest", "w") as f:
            f.write(digest)
        os.replace(dest + ".tmp-digest", dest + DIGEST)  # before the archive: an archive always has one
        install(archive, dest)


DIGEST = ".sha256"  # beside each archive in the store: "<size> <sha256>" of the archive as built and checked


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_intact_files: dict[str, tuple[int, int, int]] = {}  # path -> (device, inode, size) found intact


def _intact(path: str, name: str) -> bool:
    """``path`` is the archive ``name`` as built: its size and sha256 are those recorded in the store
    (hashed once per process and file; then its device, inode and size must not change)."""
    try:
        st = os.stat(path)
        sig = (st.st_dev, st.st_ino, st.st_size)
        if _intact_files.get(path) == sig:
            return True
        with open(os.path.join(STORE, name + DIGEST)) as f:
            size, digest = f.read().split()
        if int(size) != st.st_size or _sha256(path) != digest:
            return False
    except (OSError, ValueError):
        return False
    _intact_files[path] = sig
    return True


def _discard(path: str) -> None:
    _intact_files.pop(path, None)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def install(src: str, dest: str) -> None:
    """Copy ``src`` to ``dest`` atomically, readable by all, writable by no one."""
    staging = f"{dest}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(src, "rb") as fi, open(staging, "wb") as fo:
            while chunk := fi.read(1 << 20):
                fo.write(chunk)
        os.chmod(staging, 0o444)
        os.replace(staging, dest)
    finally:
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass


def _store_ok() -> bool:
    """The host's store is ours and private (a directory someone else made in /tmp is not used)."""
    try:
        os.makedirs(STORE, mode=0o700, exist_ok=True)
        st = os.stat(STORE)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _build_into_store(name: str, java: str, javac: str, flags: tuple[str, ...]) -> None:
    try:
        if not _store_ok():
            raise RuntimeError(f"{STORE} is not a private directory of this user")
        build(java, javac, flags, os.path.join(STORE, name))
        log.info("JVM class-data archive %s built", name)
    except Exception as e:  # Java tests keep the JDK's own archive
        log.warning("could not build the JVM class-data archive (Java tests use the JDK's own): %s", e)


def ensure(bin_cache: str | None, java: str, javac: str, flags: tuple[str, ...], wait: bool = False) -> str | None:
    """The archive's file name in ``bin_cache`` when an intact copy is there (it is then marked used,
    so the cache keeps it while Java runs); else None, and it is built in the background (once per
    process), or at once with ``wait``. ``bin_cache`` None: only build it into this host's store (an
    image build)."""
    name = archive_name(java, flags)
    if name is None:
        return None
    dest = os.path.join(bin_cache, name) if bin_cache else None
    if dest and os.path.exists(dest):
        if _intact(dest, name):
            try:
                os.utime(dest)
            except OSError:
                pass
            return name
        log.warning("JVM class-data archive %s differs from the one built; replacing it", dest)
        try:
            _discard(dest)
        except OSError:
            return None
    src = os.path.join(STORE, name)
    if os.path.exists(src) and not _intact(src, name):
        log.warning("JVM class-data archive %s differs from the one built; building it again", src)
        try:
            _discard(src)
        except OSError:
            return None
    if not os.path.isfile(src):
        with _lock:
            if name in _started and not wait:
                return None
            _started.add(name)
        if not wait:
            threading.Thread(target=_build_into_store, args=(name, java, javac, flags), daemon=True,
                             name="jvm-archive").start()
            return None
        _build_into_store(name, java, javac, flags)
        if not os.path.isfile(src):
            return None
    if dest is None:
        return name
    try:
        install(src, dest)
    except OSError as e:
        log.warning("could not copy the JVM class-data archive into %s: %s", bin_cache, e)
        return None
    return name if _intact(dest, name) else None
