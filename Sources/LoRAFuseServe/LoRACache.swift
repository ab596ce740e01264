import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// LoRA files loaded once and kept by content hash, least recently used first out when the
/// bytes held pass `byteBudget`. Keyed by content, not path: a file replaced in place under
/// the same name is read again, and two copies of one file are held once.
final class LoRACache: @unchecked Sendable {
    let byteBudget: Int
    private let lock = NSLock()
    private var files: [String: (file: LoRAFile, bytes: Int, used: UInt64)] = [:]
    private var clock: UInt64 = 0
    /// Each path's last content hash and the file it was taken of (device, inode, size,
    /// modification time): a file that has not changed is not read again to be hashed, which
    /// for a LoRA of hundreds of MB is most of a cache hit's cost.
    private var hashes: [String: (file: FileIdentity, hash: String)] = [:]
    private(set) var hits = 0
    private(set) var misses = 0

    init(byteBudget: Int) { self.byteBudget = byteBudget }

    /// Bytes of LoRA weights held now.
    var residentBytes: Int { lock.withLock { files.values.reduce(0) { $0 + $1.bytes } } }
    var count: Int { lock.withLock { files.count } }

    /// The LoRA at `path`, checked against `model`; from the cache when its content was loaded before.
    func load(path: String, model: FluxModel) throws -> LoRAFile {
        let hash = try contentHash(path)
        if let file = lock.withLock({ () -> LoRAFile? in
            guard let entry = files[hash] else { return nil }
            clock += 1
            files[hash]!.used = clock
            hits += 1
            return entry.file
        }) { return file }
        let file = try LoRAFile.load(path: path, model: model)
        let bytes = file.modules.reduce(0) { $0 + $1.down.byteCount + $1.up.byteCount }
        lock.withLock {
            misses += 1
            clock += 1
            files[hash] = (file, bytes, clock)
            // Evict the least recently used until within budget; the file just loaded stays
            // (a job needs it) even if it alone is larger than the budget.
            var held = files.values.reduce(0) { $0 + $1.bytes }
            while held > byteBudget, let oldest = files.filter({ $0.key != hash }).min(by: { $0.value.used < $1.value.used }) {
                held -= oldest.value.bytes
                files[oldest.key] = nil
            }
        }
        return file
    }
}

extension LoRACache {
    /// The content hash of the file at `path`, hashed again only when the file changed.
    func contentHash(_ path: String) throws -> String {
        let identity = FileIdentity(path: path)
        if let identity, let known = lock.withLock({ hashes[path] }), known.file == identity { return known.hash }
        let hash = try ContentHash.of(path: path)
        if let identity { lock.withLock { hashes[path] = (identity, hash) } }
        return hash
    }
}

/// What tells one file version from another without reading it.
struct FileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modifiedSeconds: Int
    let modifiedNanoseconds: Int

    init?(path: String) {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
        size = Int64(status.st_size)
        modifiedSeconds = status.st_mtim.tv_sec
        modifiedNanoseconds = status.st_mtim.tv_nsec
    }
}
