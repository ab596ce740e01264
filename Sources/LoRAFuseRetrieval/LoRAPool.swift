import Foundation
import GRDB
#if canImport(GRDBSQLite)
import GRDBSQLite
#elseif canImport(SQLite3)
import SQLite3
#endif
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// A persistent pool of LoRAs for AutoLoRA's retrieval: an SQLite database (GRDB, WAL, so
/// readers run beside one writer) holding each LoRA's path, content hash, name, caption,
/// format, rank, target model and its weight-encoder embedding with the encoder's version.
public final class LoRAPool: Sendable {
    /// A LoRA in the pool: its file, content hash, caption and embedding.
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

        public init(path: String, hash: String, name: String, caption: String, format: String, rank: Int, target: String,
                    encoderVersion: String, embedding: Data, addedAt: Date) {
            self.path = path
            self.hash = hash
            self.name = name
            self.caption = caption
            self.format = format
            self.rank = rank
            self.target = target
            self.encoderVersion = encoderVersion
            self.embedding = embedding
            self.addedAt = addedAt
        }

        /// Read by column name without Codable: the generic decoder's dynamic casts cost a
        /// search more than its whole scan (~3 ms of runtime conformance lookups).
        public init(row: Row) throws {
            path = try row.decode(forColumn: "path")
            hash = try row.decode(forColumn: "hash")
            name = try row.decode(forColumn: "name")
            caption = try row.decode(forColumn: "caption")
            format = try row.decode(forColumn: "format")
            rank = try row.decode(forColumn: "rank")
            target = try row.decode(forColumn: "target")
            encoderVersion = try row.decode(forColumn: "encoderVersion")
            embedding = try row.decode(forColumn: "embedding")
            addedAt = try row.decode(forColumn: "addedAt")
        }

        /// Whether the file is still where it was added.
        public var isPresent: Bool { FileManager.default.fileExists(atPath: path) }
    }

    /// What `add` did with a file.
    public enum AddOutcome: String, Sendable {
        case added, unchanged, reencoded, updated
    }

    /// A search hit: the entry and its cosine similarity to the query.
    public struct Match: Sendable {
        public let entry: Entry
        public let similarity: Float
    }

    public let path: String
    let database: DatabasePool

    /// How long a writer waits for another process's write to finish, in seconds.
    static let busyTimeout: TimeInterval = 60

    /// Opens (creating if needed) the pool at `path`.
    public init(path: String) throws {
        self.path = path
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        let isNew = !InputFile.exists(path)
        if !isNew, case let .failure(refusal) = InputFile.openRegular(path).map({ close($0.descriptor) }) {
            throw ModelError.notAModel(path: path, reason: "cannot open the LoRA pool: \(refusal.reason)")
        }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            // Reads go through a memory map of the file: a search scans every embedding,
            // and pread copies each page into SQLite's cache first (10,000 entries: 40 MB).
            var configuration = Configuration()
            // Other processes may be adding at the same time: a writer waits for the lock
            // (GRDB's writes are BEGIN IMMEDIATE, so two writers never deadlock on an upgrade)
            // instead of failing with SQLITE_BUSY; WAL readers never wait for a writer.
            configuration.busyMode = .timeout(Self.busyTimeout)
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
            // The pool's identity and a generation that every change of `lora` bumps (by
            // triggers, so writers that bypass LoRAFuse count too): what the vector index
            // beside the database is checked against.
            migrator.registerMigration("v2") { db in
                try db.execute(sql: """
                    CREATE TABLE pool_state (id INTEGER PRIMARY KEY CHECK (id = 0), identity INTEGER NOT NULL, generation INTEGER NOT NULL);
                    INSERT INTO pool_state VALUES (0, random(), 0);
                    CREATE TRIGGER lora_inserted AFTER INSERT ON lora BEGIN UPDATE pool_state SET generation = generation + 1; END;
                    CREATE TRIGGER lora_updated AFTER UPDATE ON lora BEGIN UPDATE pool_state SET generation = generation + 1; END;
                    CREATE TRIGGER lora_deleted AFTER DELETE ON lora BEGIN UPDATE pool_state SET generation = generation + 1; END;
                    """)
            }
            try Self.migrate(migrator, database)
        } catch {
            if isNew { Self.removeFiles(path: path) }  // a pool that never opened leaves no file behind
            throw ModelError.notAModel(path: path, reason: "cannot open the LoRA pool (\(error))")
        }
    }

    /// Deletes a pool's database, its WAL and shared-memory files and its vector index.
    public static func removeFiles(path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
        unlink(PoolVectorIndex.path(forPool: path))
    }

    /// How many entries the pool holds.
    public func count() throws -> Int { try database.read { db in try Entry.fetchCount(db) } }

    /// SQLite's `PRAGMA integrity_check`: `["ok"]` when the database file is sound, else the
    /// problems it lists.
    public func integrityCheck() throws -> [String] {
        try database.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
    }

    /// Runs the migrations when several processes may create the same pool at once. GRDB reads
    /// which migrations are applied before it takes the write lock, so the later process can
    /// replay one the other has just committed ("table already exists"); that error is moot
    /// once the migrations are complete, and otherwise the next attempt sees the new state.
    static func migrate(_ migrator: DatabaseMigrator, _ database: DatabasePool) throws {
        for attempt in 1...5 {
            do {
                try migrator.migrate(database)
                return
            } catch {
                if try database.read({ try migrator.hasCompletedMigrations($0) }) { return }
                if attempt == 5 { throw error }
                Thread.sleep(forTimeInterval: 0.05 * Double(attempt))
            }
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
        let (entry, outcome) = try Self.addition(path: absolute, hash: hash, existing: existing, caption: caption, name: name,
                                                 encoder: encoder, on: backend)
        if let entry { try database.write { db in try entry.save(db) } }
        return outcome
    }

    /// What adding the file at `path` (absolute, content `hash`) to a pool that holds
    /// `existing` for it comes to: the entry to store (nil: nothing changes) and the outcome.
    /// Encodes the LoRA only when its content or the encoder changed. `add` stores it here; a
    /// pool kept elsewhere (a PostgreSQL table) stores it there.
    public static func addition(path absolute: String, hash: String, existing: Entry?, caption: String?, name: String?,
                                encoder: LoRAWeightEncoder, on backend: any Backend) throws -> (entry: Entry?, outcome: AddOutcome) {
        if let existing, existing.hash == hash, existing.encoderVersion == encoder.version {
            guard let caption, caption != existing.caption else { return (nil, .unchanged) }
            var updated = existing
            updated.caption = caption
            return (updated, .updated)
        }
        let lora = try LoRAFile.load(path: absolute, allowUnmatchedKeys: true)
        let vector = try encoder.embed(lora, on: backend)
        guard vector.allSatisfy(\.isFinite) else {
            throw ModelError.invalidInputs("\(absolute): the weight encoder gives a non-finite embedding for this LoRA; not added")
        }
        let entry = Entry(path: absolute, hash: hash, name: name ?? existing?.name ?? URL(fileURLWithPath: absolute).deletingPathExtension().lastPathComponent,
                          caption: caption ?? existing?.caption ?? "", format: lora.format.rawValue,
                          rank: lora.modules.map(\.rank).max() ?? 0, target: "flux",
                          encoderVersion: encoder.version, embedding: vector.withUnsafeBufferPointer { Data(buffer: $0) },
                          addedAt: existing?.addedAt ?? Date())
        return (entry, existing == nil ? .added : .reencoded)
    }

    /// Every entry, by name.
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
    /// encoder version or width are skipped (stale until re-added). The rows are read from
    /// the vector index beside the database when it matches this read's pool state, else
    /// scanned from the table (and the index rewritten for the next search).
    public func search(_ query: [Float], k: Int, encoderVersion: String? = nil) throws -> [Match] {
        let unit = try Self.unitQuery(query, k: k)
        return try database.read { db in
            let state = try Self.state(db)
            let best: [(similarity: Float, path: String)]
            if let index = PoolVectorIndex.open(path: indexPath, identity: state.identity, generation: state.generation,
                                                dimension: query.count) {
                defer { index.close() }
                best = index.best(unit, k: k, version: encoderVersion)
            } else {
                let bytes = try Self.indexBytes(db, state: state, dimension: query.count)
                PoolVectorIndex.write(bytes, to: indexPath)
                best = bytes.withUnsafeBytes { PoolVectorIndex(bytes: $0)?.best(unit, k: k, version: encoderVersion) ?? [] }
            }
            let keys = best.map(\.path)
            if keys.isEmpty {
                try Self.checkWidth(query.count, among: try Int.fetchAll(db, sql: "SELECT DISTINCT length(embedding) / 4 FROM \(Entry.databaseTableName)"))
                return []
            }
            let found = try Entry.fetchAll(db, sql: "SELECT * FROM \(Entry.databaseTableName) WHERE path IN (\(keys.map { _ in "?" }.joined(separator: ", ")))",
                                           arguments: StatementArguments(keys))
            let byPath = Dictionary(uniqueKeysWithValues: found.map { ($0.path, $0) })
            return best.compactMap { match in byPath[match.path].map { Match(entry: $0, similarity: match.similarity) } }
        }
    }

    /// The `k` of `entries` most similar (cosine) to `query`, best first, as `search` ranks
    /// them (entries of another width or, when given, encoder version are skipped): for pools
    /// kept elsewhere, which read their entries themselves.
    public static func rank(_ query: [Float], k: Int, among entries: [Entry], encoderVersion: String? = nil) throws -> [Match] {
        let unit = try unitQuery(query, k: k)
        let fitting = entries.filter { $0.embedding.count == query.count * MemoryLayout<Float>.size }
        if fitting.isEmpty {
            try checkWidth(query.count, among: Array(Set(entries.map { $0.embedding.count / 4 })))
            return []
        }
        var vectors: [Float] = []
        vectors.reserveCapacity(fitting.count * query.count)
        for entry in fitting {
            entry.embedding.withUnsafeBytes { raw in
                for component in 0..<query.count { vectors.append(raw.loadUnaligned(fromByteOffset: component * 4, as: Float.self)) }
            }
        }
        let bytes = PoolVectorIndex.build(identity: 0, generation: 0, dimension: query.count,
                                          rows: fitting.map { ($0.path, $0.encoderVersion) }, vectors: vectors)
        let best = bytes.withUnsafeBytes { PoolVectorIndex(bytes: $0)?.best(unit, k: k, version: encoderVersion) ?? [] }
        let byPath = Dictionary(fitting.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        return best.compactMap { match in byPath[match.path].map { Match(entry: $0, similarity: match.similarity) } }
    }

    /// The query scaled to unit length, after checking it and `k`.
    private static func unitQuery(_ query: [Float], k: Int) throws -> [Float] {
        guard k > 0 else { throw ModelError.invalidInputs("k must be at least 1, got \(k)") }
        guard query.allSatisfy(\.isFinite) else { throw ModelError.invalidInputs("the query embedding has non-finite values") }
        let norm = (query.reduce(0) { $0 + $1 * $1 }).squareRoot()
        guard norm > 0, norm.isFinite else { throw ModelError.invalidInputs("the query embedding has no direction (its norm is \(norm))") }
        return query.map { $0 / norm }
    }

    /// A query that matched nothing because the pool's embeddings have another width is an error.
    private static func checkWidth(_ width: Int, among widths: [Int]) throws {
        if !widths.isEmpty, !widths.contains(width) {
            throw ModelError.invalidInputs("the query embedding has \(width) values; the pool's embeddings have \(widths.sorted().map(String.init).joined(separator: " or "))")
        }
    }

    /// Where the vector index of this pool lives.
    public var indexPath: String { PoolVectorIndex.path(forPool: path) }

    /// Rewrites the vector index when it does not match the pool (after adds and removals,
    /// so the next search need not), for the width of the newest entry's embedding.
    public func refreshIndex() throws {
        try database.read { db in
            let state = try Self.state(db)
            guard let bytes = try Int.fetchOne(db, sql: "SELECT length(embedding) FROM lora ORDER BY addedAt DESC LIMIT 1"),
                  bytes > 0, bytes % 4 == 0 else { return }
            if let index = PoolVectorIndex.open(path: indexPath, identity: state.identity, generation: state.generation, dimension: bytes / 4) {
                index.close()
                return
            }
            PoolVectorIndex.write(try Self.indexBytes(db, state: state, dimension: bytes / 4), to: indexPath)
        }
    }

    private static func state(_ db: Database) throws -> (identity: Int64, generation: Int64) {
        guard let row = try Row.fetchOne(db, sql: "SELECT identity, generation FROM pool_state WHERE id = 0") else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "the pool has no pool_state row")
        }
        return (row[0], row[1])
    }

    /// An index of every row whose embedding has `dimension` floats, scanned from the table
    /// with the raw statement (the blobs read in place, no Row or Data per entry).
    private static func indexBytes(_ db: Database, state: (identity: Int64, generation: Int64), dimension: Int) throws -> [UInt8] {
        let statement = try db.makeStatement(sql: "SELECT path, encoderVersion, embedding FROM \(Entry.databaseTableName)")
        let handle = statement.sqliteStatement
        defer { sqlite3_reset(handle) }
        let expectedBytes = dimension * MemoryLayout<Float>.size
        var rows: [(path: String, version: String)] = []
        var vectors: [Float] = []
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { break }
            guard code == SQLITE_ROW else { throw DatabaseError(resultCode: ResultCode(rawValue: code), message: "pool scan failed") }
            guard let blob = sqlite3_column_blob(handle, 2), Int(sqlite3_column_bytes(handle, 2)) == expectedBytes else { continue }
            rows.append((String(cString: sqlite3_column_text(handle, 0)), String(cString: sqlite3_column_text(handle, 1))))
            let raw = UnsafeRawBufferPointer(start: blob, count: expectedBytes)
            for component in 0..<dimension { vectors.append(raw.loadUnaligned(fromByteOffset: component * 4, as: Float.self)) }
        }
        return PoolVectorIndex.build(identity: state.identity, generation: state.generation, dimension: dimension,
                                     rows: rows, vectors: vectors)
    }

    /// Σ v·q of a stored vector (unaligned) and the query, 16 lanes at a time.
    static func dot(_ vector: UnsafeRawPointer, _ query: UnsafeBufferPointer<Float>) -> Float {
        let count = query.count
        let queryRaw = UnsafeRawPointer(query.baseAddress!)
        var sum = SIMD16<Float>()
        var index = 0
        while index + 16 <= count {
            sum += vector.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<Float>.self)
                * queryRaw.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<Float>.self)
            index += 16
        }
        var total = sum.sum()
        while index < count {
            total += vector.loadUnaligned(fromByteOffset: index * 4, as: Float.self) * query[index]
            index += 1
        }
        return total
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

    /// A query encoder from CLIP's tokenizer and text encoder.
    public init(tokenizer: CLIPTokenizer, encoder: CLIPTextEncoder) {
        self.tokenizer = tokenizer
        self.encoder = encoder
    }

    /// From a FLUX pipeline folder (`text_encoder/`, `tokenizer/`).
    public static func load(pipeline path: String, clipRules: CLIPTokenizerRules = .transformers5) throws -> RetrievalQueryEncoder {
        let root = URL(fileURLWithPath: path)
        return RetrievalQueryEncoder(tokenizer: try CLIPTokenizer(folder: root.appendingPathComponent("tokenizer").path, rules: clipRules),
                                     encoder: try CLIPTextEncoder.load(path: root.appendingPathComponent("text_encoder").path))
    }

    /// The normalised CLIP embedding of `text`, the pool's query vector.
    public func embed(_ text: String, on backend: any Backend) throws -> [Float] {
        let length = min(tokenizer.defaultLength, encoder.config.maxPositions)
        var ids = tokenizer.encode(text, length: length)
        // CLIP's attention is causal and FLUX passes no padding mask, so the state at the
        // pooled (end-of-text) token depends only on the tokens up to it: the padding after
        // it is not run (a 7-word prompt: 9 of 77 positions).
        if let pooled = encoder.poolingPositions([ids]).first, pooled + 1 < ids.count {
            ids = Array(ids[...pooled])
        }
        return try backend.execute(encoder.graph(batch: 1, length: ids.count), inputs: encoder.inputs([ids])).outputs[1].floats()
    }
}
