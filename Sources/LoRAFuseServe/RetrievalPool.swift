import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseRetrieval
import PostgresNIO

/// The LoRA pool a server retrieves from (`auto_loras`) and adds to (POST /loras): a SQLite
/// pool file as `lorafuse pool` keeps it, or a table in a PostgreSQL database, shared by every
/// server and worker of a shared queue (`PostgresLoRAPool`).
protocol RetrievalPool: Sendable {
    /// Where the pool lives, for messages (a file, or a database without its password).
    var location: String { get }
    /// Every entry, by name.
    func list() async throws -> [LoRAPool.Entry]
    /// The `k` entries most similar (cosine) to `query`, best first.
    func nearest(_ query: [Float], k: Int) async throws -> [LoRAPool.Match]
    /// Adds or refreshes the LoRA at `path` (encoded on `backend` when its content or the encoder changed).
    func add(path: String, caption: String?, encoder: LoRAWeightEncoder, backend: any Backend) async throws -> LoRAPool.AddOutcome
    /// Removes the entries whose name or path is `key`; how many.
    func removeEntries(_ key: String) async throws -> Int
}

enum RetrievalPools {
    /// The pool `--pool` names: a `postgres://` URL or a SQLite file.
    static func open(_ location: String) async throws -> any RetrievalPool {
        if JobQueues.isPostgres(location) { return try await PostgresLoRAPool(url: location) }
        return try LoRAPool(path: location)
    }
}

extension LoRAPool: RetrievalPool {
    public var location: String { path }

    func list() throws -> [Entry] { try entries() }

    func nearest(_ query: [Float], k: Int) throws -> [Match] { try search(query, k: k, encoderVersion: nil) }

    func add(path file: String, caption: String?, encoder: LoRAWeightEncoder, backend: any Backend) throws -> AddOutcome {
        let outcome = try add(path: file, caption: caption, name: nil, encoder: encoder, on: backend)
        try refreshIndex()
        return outcome
    }

    func removeEntries(_ key: String) throws -> Int {
        let removed = try remove(key)
        try refreshIndex()
        return removed
    }
}

/// The pool as a PostgreSQL table (`lora`, beside the job queue's `job`): the entries
/// `LoRAPool` keeps, with the same add rule (`LoRAPool.addition`: encode only what changed)
/// and ranking (`LoRAPool.rank`). A search reads every embedding of the table: a pool of a
/// thousand LoRAs is about 3 MB a query, small beside a generation.
final class PostgresLoRAPool: RetrievalPool {
    private let database: PostgresDatabase
    private let table: String
    var location: String { database.location }

    init(url: String) async throws {
        database = try await PostgresDatabase(url: url, purpose: "the LoRA pool")
        table = database.table("lora")
        try await database.create(what: "the LoRA pool", ["""
            CREATE TABLE IF NOT EXISTS \(table) (
                path text PRIMARY KEY,
                hash text NOT NULL,
                name text NOT NULL,
                caption text NOT NULL,
                format text NOT NULL,
                rank integer NOT NULL,
                target text NOT NULL,
                encoder_version text NOT NULL,
                embedding bytea NOT NULL,
                added_at timestamptz NOT NULL
            )
            """])
    }

    private static let columns = "path, hash, name, caption, format, rank, target, encoder_version, embedding, added_at"

    private static func entry(_ row: PostgresRow) throws -> LoRAPool.Entry {
        let cells = row.makeRandomAccess()
        return LoRAPool.Entry(path: try cells["path"].decode(String.self), hash: try cells["hash"].decode(String.self),
                              name: try cells["name"].decode(String.self), caption: try cells["caption"].decode(String.self),
                              format: try cells["format"].decode(String.self), rank: try cells["rank"].decode(Int.self),
                              target: try cells["target"].decode(String.self), encoderVersion: try cells["encoder_version"].decode(String.self),
                              embedding: try cells["embedding"].decode(Data.self), addedAt: try cells["added_at"].decode(Date.self))
    }

    func list() async throws -> [LoRAPool.Entry] {
        try await database.rows("SELECT \(Self.columns) FROM \(table) ORDER BY name, path").map(Self.entry)
    }

    func nearest(_ query: [Float], k: Int) async throws -> [LoRAPool.Match] {
        try LoRAPool.rank(query, k: k, among: try await list())
    }

    func removeEntries(_ key: String) async throws -> Int {
        try await database.rows("DELETE FROM \(table) WHERE name = $1 OR path = $1 RETURNING path", [key]).count
    }

    func add(path file: String, caption: String?, encoder: LoRAWeightEncoder, backend: any Backend) async throws -> LoRAPool.AddOutcome {
        let absolute = URL(fileURLWithPath: file).standardizedFileURL.path
        let hash = try ContentHash.of(path: absolute)
        let existing = try await database.rows("SELECT \(Self.columns) FROM \(table) WHERE path = $1", [absolute]).first.map(Self.entry)
        let (entry, outcome) = try LoRAPool.addition(path: absolute, hash: hash, existing: existing, caption: caption, name: nil,
                                                     encoder: encoder, on: backend)
        guard let entry else { return outcome }
        try await database.rows("""
            INSERT INTO \(table) (\(Self.columns)) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (path) DO UPDATE SET hash = excluded.hash, name = excluded.name, caption = excluded.caption, format = excluded.format,
                rank = excluded.rank, target = excluded.target, encoder_version = excluded.encoder_version, embedding = excluded.embedding
            """, [entry.path, entry.hash, entry.name, entry.caption, entry.format, entry.rank, entry.target, entry.encoderVersion,
                  entry.embedding, entry.addedAt])
        return outcome
    }
}
