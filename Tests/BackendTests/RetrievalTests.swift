import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// AutoLoRA's LoRA weight encoder against a PyTorch implementation written from the
/// research code, LoRAs read by DiffSynth's own loader (Tools/reference/make_retrieval_fixtures.py).
@Suite(.serialized) struct RetrievalTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let encoderPath = fixtures.appendingPathComponent("retrieval/encoder.safetensors").path

    @Test(arguments: ["all.peft", "partial.peft", "attention.peft", "all.kohya", "attention.diffsynth"])
    func embeddingsMatchTheReference(_ name: String) throws {
        let encoder = try LoRAWeightEncoder.load(path: Self.encoderPath)
        #expect(encoder.layers.count == 26 && encoder.width == 16 && encoder.heads == 12)
        let lora = try LoRAFile.load(path: Self.fixtures.appendingPathComponent("lora/\(name).safetensors").path)
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("retrieval/expected.safetensors").path).tensor(named: name)
        for backend in BackendsUnderTest.all {
            let embedding = try encoder.embed(lora, on: backend)
            let error = relativeError(actual: embedding, expected: expected.doubles())
            print("retrieval \(name) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(name) on \(BackendsUnderTest.label(backend)): \(error)")
        }
    }
}

/// The SQLite pool: add twice, change a file, remove, search order, a vanished file, a
/// second connection reading while the first writes.
@Suite(.serialized) struct LoRAPoolTests {
    static let fixtures = RetrievalTests.fixtures

    @Test func poolOperations() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-pool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let encoder = try LoRAWeightEncoder.load(path: RetrievalTests.encoderPath)
        let backend = BackendsUnderTest.all[0]
        let pool = try LoRAPool(path: folder.appendingPathComponent("pool.sqlite").path)
        var copies: [String: URL] = [:]
        for name in ["all.peft", "partial.peft", "attention.diffsynth"] {
            let copy = folder.appendingPathComponent("\(name).safetensors")
            try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("lora/\(name).safetensors"), to: copy)
            copies[name] = copy
            #expect(try pool.add(path: copy.path, caption: "caption of \(name)", encoder: encoder, on: backend) == .added)
        }
        // Adding again: skipped by content hash; a new caption alone is an update.
        #expect(try pool.add(path: copies["all.peft"]!.path, encoder: encoder, on: backend) == .unchanged)
        #expect(try pool.add(path: copies["all.peft"]!.path, caption: "new words", encoder: encoder, on: backend) == .updated)
        #expect(try pool.entries().first { $0.name == "all.peft" }?.caption == "new words")
        // Search with a LoRA's own embedding finds it first (cosine 1).
        let partial = try encoder.embed(LoRAFile.load(path: copies["partial.peft"]!.path), on: backend)
        var matches = try pool.search(partial, k: 3)
        #expect(matches.map(\.entry.name).first == "partial.peft" && abs(matches[0].similarity - 1) < 1e-5)
        #expect(matches.count == 3 && zip(matches, matches.dropFirst()).allSatisfy { $0.similarity >= $1.similarity })
        // A changed file is re-encoded: now the attention LoRA's content under partial's path.
        try FileManager.default.removeItem(at: copies["partial.peft"]!)
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("lora/attention.peft.safetensors"), to: copies["partial.peft"]!)
        #expect(try pool.add(path: copies["partial.peft"]!.path, encoder: encoder, on: backend) == .reencoded)
        matches = try pool.search(partial, k: 3)
        #expect(matches.first.map { abs($0.similarity - 1) > 1e-4 } == true, "the old embedding is gone")
        // A second connection reads what the first wrote; removal by name; a vanished file is reported.
        let reader = try LoRAPool(path: pool.path)
        #expect(try reader.entries().count == 3)
        #expect(try pool.remove("attention.diffsynth") == 1 && (try reader.entries().count) == 2)
        try FileManager.default.removeItem(at: copies["all.peft"]!)
        #expect(try reader.entries().first { $0.name == "all.peft" }?.isPresent == false)
        #expect(try pool.remove("not-there") == 0)
        // Entries of another encoder version are left out of a filtered search.
        #expect(try pool.search(partial, k: 3, encoderVersion: "other").isEmpty)
    }

    /// The vector index beside the database is a cache: used only when it matches the pool's
    /// identity and generation, rebuilt when stale or damaged, never the reason for a wrong
    /// answer.
    @Test func vectorIndexFollowsThePool() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-index-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("pool.sqlite").path
        func entry(_ name: String, _ vector: [Float], version: String = "v1") -> LoRAPool.Entry {
            LoRAPool.Entry(path: "/loras/\(name).safetensors", hash: name, name: name, caption: "", format: "peft", rank: 4, target: "flux",
                           encoderVersion: version, embedding: vector.withUnsafeBufferPointer { Data(buffer: $0) }, addedAt: Date())
        }
        // 37 entries of width 19 (odd, not a multiple of 16), one of another width, one of another version.
        var generator = SystemRandomNumberGenerator()
        let vectors = (0..<37).map { _ in (0..<19).map { _ in Float.random(in: -1...1, using: &generator) } }
        var pool = try LoRAPool(path: path)
        try pool.insert(vectors.enumerated().map { entry("lora\($0.offset)", $0.element) }
                        + [entry("narrow", [1, 2, 3]), entry("other", vectors[5], version: "v2")])
        func names(_ query: [Float], version: String? = nil) throws -> [String] {
            try pool.search(query, k: 4, encoderVersion: version).map(\.entry.name)
        }
        func cosine(_ a: [Float], _ b: [Float]) -> Float {
            zip(a, b).map(*).reduce(0, +) / (a.map { $0 * $0 }.reduce(0, +).squareRoot() * b.map { $0 * $0 }.reduce(0, +).squareRoot())
        }
        let query = vectors[5].enumerated().map { $0.element + (Float($0.offset % 3) - 1) * 0.3 }
        var scored: [(name: String, similarity: Float)] = vectors.enumerated().map { ("lora\($0.offset)", cosine($0.element, query)) }
        scored.append(("other", cosine(vectors[5], query)))
        scored.sort { $0.similarity > $1.similarity || ($0.similarity == $1.similarity && $0.name < $1.name) }
        let expected = scored.prefix(4).map(\.name)
        #expect(!FileManager.default.fileExists(atPath: pool.indexPath))
        #expect(try names(query) == Array(expected), "first search scans the table")
        #expect(FileManager.default.fileExists(atPath: pool.indexPath), "and leaves the index behind")
        #expect(try names(query) == Array(expected), "the second reads the index")
        #expect(try names(query, version: "v2") == ["other"])
        #expect(try pool.search([1, 2, 3], k: 4).map(\.entry.name) == ["narrow"], "another width: its own index")
        // A change through another connection makes the index stale.
        let writer = try LoRAPool(path: path)
        try writer.insert([entry("exact", query)])
        #expect(try names(query).first == "exact")
        _ = try writer.remove("exact")
        #expect(try names(query) == Array(expected))
        // A damaged index is rebuilt, not trusted.
        for damage in [Data(), Data("not an index".utf8), Data(repeating: 0xFF, count: 4096)] {
            try damage.write(to: URL(fileURLWithPath: pool.indexPath))
            #expect(try names(query) == Array(expected))
        }
        // A new pool at the same path (database deleted, index left behind) does not use the old index.
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        pool = try LoRAPool(path: path)
        try pool.insert([entry("fresh", vectors[0])])
        #expect(try names(query) == ["fresh"])
        try pool.refreshIndex()
        #expect(try names(query) == ["fresh"])
    }
}
