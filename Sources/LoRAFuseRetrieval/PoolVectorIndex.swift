import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// The pool's embeddings as one matrix in a file beside the database (`POOL-vectors`), so a
/// search reads 30 MB of rows through one memory map instead of stepping SQLite through
/// 10,000 records. It is a cache: SQLite stays the only source of truth. The file carries the
/// pool's identity and generation (a counter that triggers in the database bump on every
/// insert, update and delete), and a search uses it only when both equal the values it reads
/// in its own read transaction; otherwise it scans the table as before and rewrites the file
/// (a temporary file renamed over the old one, so readers never see half of it).
///
/// Layout (little-endian): a 64-byte header (magic, identity, generation, dimension, row
/// count, version count, string bytes, 0), the rows scaled to unit length [count × dimension]
/// F32, each row's encoder-version index [count] UInt32 (padded to 8 bytes), string offsets
/// [count + versions + 1] Int64, then the UTF-8 of every row's path and every version.
struct PoolVectorIndex {
    static let magic: UInt64 = 0x3130_5443_4556_464C  // "LFVECT01"
    static let headerBytes = 64

    let identity: Int64
    let generation: Int64
    let dimension: Int
    let count: Int
    let versionCount: Int
    private let base: UnsafeRawPointer
    private let byteCount: Int
    private let mapped: Bool

    static func path(forPool pool: String) -> String { pool + "-vectors" }

    private static func layout(count: Int, dimension: Int, versions: Int) -> (versions: Int, offsets: Int, strings: Int) {
        let versionsAt = headerBytes + count * dimension * 4
        let offsetsAt = versionsAt + (count * 4 + 7) / 8 * 8
        return (versionsAt, offsetsAt, offsetsAt + (count + versions + 1) * 8)
    }

    /// Maps the file at `path` when it is a well-formed index of this pool state and width;
    /// nil otherwise (absent, stale, another width, damaged).
    static func open(path: String, identity: Int64, generation: Int64, dimension: Int) -> PoolVectorIndex? {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { return nil }
        defer { Glibc.close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_size >= headerBytes else { return nil }
        let size = Int(status.st_size)
        guard let address = mmap(nil, size, PROT_READ, MAP_SHARED | MAP_POPULATE, descriptor, 0), address != MAP_FAILED else { return nil }
        let index = PoolVectorIndex(base: UnsafeRawPointer(address), byteCount: size, mapped: true)
        guard let index, index.identity == identity, index.generation == generation, index.dimension == dimension else {
            munmap(address, size)
            return nil
        }
        return index
    }

    /// An index held in memory (built by `build`); valid while `bytes` is.
    init?(bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return nil }
        self.init(base: base, byteCount: bytes.count, mapped: false)
    }

    /// Reads and checks the header and string table of `byteCount` bytes at `base`.
    private init?(base: UnsafeRawPointer, byteCount: Int, mapped: Bool) {
        func field(_ index: Int) -> Int64 { Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * index, as: Int64.self)) }
        guard UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)) == Self.magic else { return nil }
        let dimension = field(3), count = field(4), versions = field(5), stringBytes = field(6)
        guard (1...65536).contains(dimension), (0...100_000_000).contains(count), (0...65536).contains(versions),
              (0...Int64(Int32.max)).contains(stringBytes) else { return nil }
        let layout = Self.layout(count: Int(count), dimension: Int(dimension), versions: Int(versions))
        guard layout.strings + Int(stringBytes) == byteCount else { return nil }
        self.base = base
        self.byteCount = byteCount
        self.mapped = mapped
        identity = field(1)
        generation = field(2)
        self.dimension = Int(dimension)
        self.count = Int(count)
        versionCount = Int(versions)
        // Offsets must rise within the string bytes, and version indices stay in range.
        var previous: Int64 = 0
        for entry in 0...(self.count + versionCount) {
            let offset = stringOffset(entry)
            guard offset >= previous, offset <= stringBytes, entry > 0 || offset == 0 else { return nil }
            previous = offset
        }
        guard previous == stringBytes else { return nil }
        for row in 0..<self.count where versionIndex(row) >= versionCount { return nil }
    }

    func close() {
        if mapped { munmap(UnsafeMutableRawPointer(mutating: base), byteCount) }
    }

    private var layout: (versions: Int, offsets: Int, strings: Int) {
        Self.layout(count: count, dimension: dimension, versions: versionCount)
    }

    private func stringOffset(_ entry: Int) -> Int64 {
        Int64(littleEndian: base.loadUnaligned(fromByteOffset: layout.offsets + 8 * entry, as: Int64.self))
    }

    private func string(_ entry: Int) -> String {
        let start = Int(stringOffset(entry)), end = Int(stringOffset(entry + 1))
        return String(decoding: UnsafeRawBufferPointer(start: base + layout.strings + start, count: end - start), as: UTF8.self)
    }

    func versionIndex(_ row: Int) -> Int {
        Int(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: layout.versions + 4 * row, as: UInt32.self)))
    }

    func path(_ row: Int) -> String { string(row) }
    func version(_ index: Int) -> String { string(count + index) }

    /// Row `row`'s unit vector.
    func row(_ row: Int) -> UnsafePointer<Float> {
        (base + Self.headerBytes + row * dimension * 4).assumingMemoryBound(to: Float.self)
    }

    /// The `k` rows most similar to `unitQuery` (a unit vector of `dimension` floats), best
    /// first, ties by path; only rows of `version` when given.
    func best(_ unitQuery: [Float], k: Int, version: String?) -> [(similarity: Float, path: String)] {
        var allowed: Int?
        if let version {
            guard let found = (0..<versionCount).first(where: { self.version($0) == version }) else { return [] }
            allowed = found
        }
        var best = BestMatches(k: k)
        unitQuery.withUnsafeBufferPointer { query in
            for row in 0..<count where allowed == nil || versionIndex(row) == allowed {
                let similarity = LoRAPool.dot(UnsafeRawPointer(self.row(row)), query)
                if best.admits(similarity) { best.insert(similarity, path: path(row)) }
            }
        }
        return best.matches
    }

    /// The bytes of an index over `rows` (their vectors in `vectors`, row after row of
    /// `dimension` floats, any length: each row is scaled to unit length here).
    static func build(identity: Int64, generation: Int64, dimension: Int,
                      rows: [(path: String, version: String)], vectors: [Float]) -> [UInt8] {
        precondition(vectors.count == rows.count * dimension)
        var versions: [String] = []
        var versionIndices: [String: UInt32] = [:]
        for row in rows where versionIndices[row.version] == nil {
            versionIndices[row.version] = UInt32(versions.count)
            versions.append(row.version)
        }
        var strings: [UInt8] = []
        var offsets: [Int64] = [0]
        for text in rows.map(\.path) + versions {
            strings += Array(text.utf8)
            offsets.append(Int64(strings.count))
        }
        let layout = layout(count: rows.count, dimension: dimension, versions: versions.count)
        var bytes = [UInt8](repeating: 0, count: layout.strings + strings.count)
        bytes.withUnsafeMutableBytes { raw in
            for (index, value) in [Int64(bitPattern: magic), identity, generation, Int64(dimension), Int64(rows.count),
                                   Int64(versions.count), Int64(strings.count)].enumerated() {
                raw.storeBytes(of: value.littleEndian, toByteOffset: 8 * index, as: Int64.self)
            }
            for (index, row) in rows.enumerated() {
                let source = vectors[index * dimension..<(index + 1) * dimension]
                let squares = source.reduce(Float(0)) { $0 + $1 * $1 }
                let scale: Float = squares > 0 ? 1 / squares.squareRoot() : 0
                for (component, value) in source.enumerated() {
                    raw.storeBytes(of: (value * scale).bitPattern.littleEndian,
                                   toByteOffset: headerBytes + (index * dimension + component) * 4, as: UInt32.self)
                }
                raw.storeBytes(of: versionIndices[row.version]!.littleEndian, toByteOffset: layout.versions + 4 * index, as: UInt32.self)
            }
            for (index, offset) in offsets.enumerated() {
                raw.storeBytes(of: offset.littleEndian, toByteOffset: layout.offsets + 8 * index, as: Int64.self)
            }
            strings.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: raw[layout.strings...]).copyMemory(from: $0) }
        }
        return bytes
    }

    /// Writes index bytes to `path` through a temporary file, fsync and a rename; false when
    /// it cannot (a read-only folder, a full disk): searches then keep scanning the table.
    @discardableResult
    static func write(_ bytes: [UInt8], to path: String) -> Bool {
        let temporary = path + ".\(getpid()).tmp"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return false }
        var written = 0
        bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let result = Glibc.write(descriptor, raw.baseAddress! + written, raw.count - written)
                if result <= 0 { break }
                written += result
            }
        }
        let synced = fsync(descriptor) == 0
        Glibc.close(descriptor)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        return true
    }
}

/// The best `k` (similarity, path) pairs seen so far, best first; equal similarities ordered
/// by path so results do not depend on row order.
struct BestMatches {
    let k: Int
    private(set) var matches: [(similarity: Float, path: String)] = []

    init(k: Int) { self.k = k }

    func admits(_ similarity: Float) -> Bool {
        matches.count < k || similarity >= matches[matches.count - 1].similarity
    }

    mutating func insert(_ similarity: Float, path: String) {
        let position = matches.firstIndex { similarity > $0.similarity || (similarity == $0.similarity && path < $0.path) } ?? matches.count
        guard position < k else { return }
        matches.insert((similarity, path), at: position)
        if matches.count > k { matches.removeLast() }
    }
}
