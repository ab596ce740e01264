import Foundation
import GRDB
#if canImport(GRDBSQLite)
import GRDBSQLite
#elseif canImport(SQLite3)
import SQLite3
#endif

/// A persistent pool of LoRAs for AutoLoRA's retrieval: an SQLite database (GRDB, WAL, so
/// readers run beside one writer) holding each LoRA's path, content hash, name, caption,
/// format, rank, target model and its weight-encoder embedding with the encoder's version.
public final class LoRAPool: Sendable {
    public struct Entry: Codable, Sendable, FetchableRecord, PersistableRecord {
        public static let databaseTableName = "lora"
        public var path: String
        public var hash: String
        public var name: String
        public var caption: String
        public var format: String
        public var rank: Int
        public var target: String
        public var encoderVersion: String
        public var embedding: Data
        public var addedAt: Date

        /// Whether the file is still where it was added.
        public var isPresent: Bool { FileManager.default.fileExists(atPath: path) }
    }

    /// What `add` did with a file.
    public enum AddOutcome: String, Sendable {
        case added, unchanged, reencoded, updated
    }

    public struct Match: Sendable {
        public let entry: Entry
        public let similarity: Float
    }

    public let path: String
    let database: DatabasePool

    /// Opens (creating if needed) the pool at `path`.
    public init(path: String) throws {
        self.path = path
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            // Reads go through a memory map of the file: a search scans every embedding,
            // and pread copies each page into SQLite's cache first (10,000 entries: 40 MB).
            var configuration = Configuration()
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA mmap_size = 1073741824") }
            database = try DatabasePool(path: path, configuration: configuration)
            var migrator = DatabaseMigrator()
            migrator.registerMigration("v1") { db in
                try db.create(table: Entry.databaseTableName) { table in
                    table.primaryKey("path", .text)
                    table.column("hash", .text).notNull()
                    table.column("name", .text).notNull()
                    table.column("caption", .text).notNull()
                    table.column("format", .text).notNull()
                    table.column("rank", .integer).notNull()
                    table.column("target", .text).notNull()
                    table.column("encoderVersion", .text).notNull()
                    table.column("embedding", .blob).notNull()
                    table.column("addedAt", .datetime).notNull()
                }
                try db.create(index: "lora_name", on: Entry.databaseTableName, columns: ["name"])
            }
            try migrator.migrate(database)
        } catch {
            throw ModelError.notAModel(path: path, reason: "cannot open the LoRA pool (\(error))")
        }
    }

    /// Adds or refreshes `file`: skipped when its content hash and the encoder's version are
    /// the ones stored; otherwise encoded (on `backend`) and stored.
    @discardableResult
    public func add(path file: String, caption: String? = nil, name: String? = nil, encoder: LoRAWeightEncoder,
                    on backend: any Backend) throws -> AddOutcome {
        let absolute = URL(fileURLWithPath: file).standardizedFileURL.path
        let hash = try ContentHash.of(path: absolute)
        let existing = try database.read { db in try Entry.fetchOne(db, key: absolute) }
        if let existing, existing.hash == hash, existing.encoderVersion == encoder.version {
            if let caption, caption != existing.caption {
                try database.write { db in
                    var updated = existing
                    updated.caption = caption
                    try updated.update(db)
                }
                return .updated
            }
            return .unchanged
        }
        let lora = try LoRAFile.load(path: absolute, allowUnmatchedKeys: true)
        let vector = try encoder.embed(lora, on: backend)
        let entry = Entry(path: absolute, hash: hash, name: name ?? existing?.name ?? URL(fileURLWithPath: absolute).deletingPathExtension().lastPathComponent,
                          caption: caption ?? existing?.caption ?? "", format: lora.format.rawValue,
                          rank: lora.modules.map(\.rank).max() ?? 0, target: "flux",
                          encoderVersion: encoder.version, embedding: vector.withUnsafeBufferPointer { Data(buffer: $0) },
                          addedAt: existing?.addedAt ?? Date())
        try database.write { db in try entry.save(db) }
        return existing == nil ? .added : .reencoded
    }

    public func entries() throws -> [Entry] {
        try database.read { db in try Entry.order(Column("name"), Column("path")).fetchAll(db) }
    }

    /// Removes the entries whose path or name is `key`; returns how many.
    @discardableResult
    public func remove(_ key: String) throws -> Int {
        let absolute = URL(fileURLWithPath: key).standardizedFileURL.path
        return try database.write { db in
            try Entry.filter(Column("path") == absolute || Column("name") == key).deleteAll(db)
        }
    }

    /// The `k` entries most similar (cosine) to `query`, best first. Entries from another
    /// encoder version or width are skipped (stale until re-added).
    public func search(_ query: [Float], k: Int, encoderVersion: String? = nil) throws -> [Match] {
        let norm = (query.reduce(0) { $0 + $1 * $1 }).squareRoot()
        guard norm > 0, k > 0 else { return [] }
        // Scan (path, embedding) rows without decoding whole records; keep the best k.
        var best: [(similarity: Float, path: String)] = []
        try database.read { db in
            var sql = "SELECT path, embedding FROM \(Entry.databaseTableName)"
            var arguments: StatementArguments = []
            if let encoderVersion {
                sql += " WHERE encoderVersion = ?"
                arguments = [encoderVersion]
            }
            // The raw statement: the blob is read in place (no Row or Data per entry).
            let statement = try db.makeStatement(sql: sql)
            try statement.setArguments(arguments)
            let handle = statement.sqliteStatement
            defer { sqlite3_reset(handle) }
            let expectedBytes = query.count * MemoryLayout<Float>.size
            while true {
                let code = sqlite3_step(handle)
                if code == SQLITE_DONE { break }
                guard code == SQLITE_ROW else { throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "pool scan failed") }
                guard let blob = sqlite3_column_blob(handle, 1), Int(sqlite3_column_bytes(handle, 1)) == expectedBytes else { continue }
                let (dot, squares) = Self.dotAndSquares(UnsafeRawBufferPointer(start: blob, count: expectedBytes), query)
                let similarity = squares > 0 ? dot / (squares.squareRoot() * norm) : 0
                if best.count < k || similarity > best[best.count - 1].similarity {
                    let path = String(cString: sqlite3_column_text(handle, 0))
                    let position = best.firstIndex { similarity > $0.similarity || (similarity == $0.similarity && path < $0.path) } ?? best.count
                    best.insert((similarity, path), at: position)
                    if best.count > k { best.removeLast() }
                }
            }
        }
        let entries = try database.read { db in try Entry.fetchAll(db, keys: best.map(\.path)) }
        let byPath = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0) })
        return best.compactMap { match in byPath[match.path].map { Match(entry: $0, similarity: match.similarity) } }
    }

    /// Σ v·q and Σ v² of a stored vector (unaligned bytes) against the query, 16 lanes at a time.
    static func dotAndSquares(_ raw: UnsafeRawBufferPointer, _ query: [Float]) -> (Float, Float) {
        let count = query.count
        var dot = SIMD16<Float>(), squares = SIMD16<Float>()
        var index = 0
        query.withUnsafeBufferPointer { q in
            let qRaw = UnsafeRawPointer(q.baseAddress!)
            while index + 16 <= count {
                let v = raw.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<Float>.self)
                let w = qRaw.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<Float>.self)
                dot += v * w
                squares += v * v
                index += 16
            }
        }
        var dotSum = dot.sum(), squareSum = squares.sum()
        while index < count {
            let v = raw.loadUnaligned(fromByteOffset: index * 4, as: Float.self)
            dotSum += v * query[index]
            squareSum += v * v
            index += 1
        }
        return (dotSum, squareSum)
    }

    /// Stores entries directly (benchmarks and imports); replaces entries with equal paths.
    public func insert(_ entries: [Entry]) throws {
        try database.write { db in for entry in entries { try entry.save(db) } }
    }
}

/// The query side of retrieval: FLUX's CLIP-L text encoder, its 768-d state at the
/// end-of-text token after the final LayerNorm, no projection.
public struct RetrievalQueryEncoder: Sendable {
    public let tokenizer: CLIPTokenizer
    public let encoder: CLIPTextEncoder

    public init(tokenizer: CLIPTokenizer, encoder: CLIPTextEncoder) {
        self.tokenizer = tokenizer
        self.encoder = encoder
    }

    /// From a FLUX pipeline folder (`text_encoder/`, `tokenizer/`).
    public static func load(pipeline path: String) throws -> RetrievalQueryEncoder {
        let root = URL(fileURLWithPath: path)
        return RetrievalQueryEncoder(tokenizer: try CLIPTokenizer(folder: root.appendingPathComponent("tokenizer").path),
                                     encoder: try CLIPTextEncoder.load(path: root.appendingPathComponent("text_encoder").path))
    }

    public func embed(_ text: String, on backend: any Backend) throws -> [Float] {
        let length = min(tokenizer.defaultLength, encoder.config.maxPositions)
        let ids = tokenizer.encode(text, length: length)
        return try backend.execute(encoder.graph(batch: 1, length: length), inputs: encoder.inputs([ids])).outputs[1].floats()
    }
}
