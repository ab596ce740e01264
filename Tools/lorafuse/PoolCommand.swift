import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse pool …`: the retrieval pool of LoRAs (AutoLoRA), kept in SQLite.
struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Keep a pool of LoRAs embedded by AutoLoRA's weight encoder, and search it by prompt.",
        subcommands: [Add.self, List.self, Remove.self, Search.self]
    )

    /// `--db`: the pool's database.
    struct Location: ParsableArguments {
        @Option(name: .long, help: "The pool database (default: $LORAFUSE_POOL, else ~/.cache/lorafuse/pool.sqlite).")
        var db: String?

        var path: String {
            db ?? ProcessInfo.processInfo.environment["LORAFUSE_POOL"]
                ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/lorafuse/pool.sqlite").path
        }

        func open() throws -> LoRAPool { try LoRAPool(path: path) }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add LoRA files: encoded once; unchanged files are skipped by content hash, and re-encoded when the encoder changes.")

        @Argument(help: "LoRA files (.safetensors).")
        var files: [String]

        @Option(name: .long, help: "The weight encoder (research-code names, .safetensors).")
        var encoder: String

        @Option(name: .long, help: "Caption or tags to store (the same for every file given).")
        var caption: String?

        @OptionGroup var location: Location
        @OptionGroup var backendOptions: BackendOptions

        @Flag(name: .long, help: "One JSON line per file.")
        var json = false

        func run() throws {
            // A pool this command creates and fills with nothing is not left behind.
            let isNew = !InputFile.exists(location.path)
            let pool = try location.open()
            var added = false
            defer { if isNew, !added, (try? pool.count()) ?? 0 == 0 { LoRAPool.removeFiles(path: location.path) } }
            let weights = try LoRAWeightEncoder.load(path: encoder)
            let backend = try backendOptions.makeBackend()
            var failures = 0
            for file in files {
                do {
                    let outcome = try pool.add(path: file, caption: caption, encoder: weights, on: backend)
                    added = true
                    print(json ? try JSONOutput.line(["command": "pool add", "path": file, "outcome": outcome.rawValue]) : "\(outcome.rawValue): \(file)")
                } catch {
                    failures += 1
                    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                }
            }
            try pool.refreshIndex()  // so the next search reads one matrix, not every record
            if failures > 0 { throw ExitCode(1) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the pool's LoRAs; files that moved or vanished are marked missing.")

        @OptionGroup var location: Location

        @Flag(name: .long, help: "One JSON line per LoRA.")
        var json = false

        func run() throws {
            for entry in try location.open().entries() {
                if json {
                    print(try JSONOutput.line(["name": entry.name, "path": entry.path, "caption": entry.caption, "format": entry.format,
                                               "rank": entry.rank, "hash": entry.hash, "encoder_version": entry.encoderVersion,
                                               "present": entry.isPresent]))
                } else {
                    print("\(entry.name)\t\(entry.format) r\(entry.rank)\t\(entry.isPresent ? "" : "[missing] ")\(entry.path)\t\(entry.caption)")
                }
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove LoRAs by path or name.")

        @Argument(help: "Paths or names.")
        var keys: [String]

        @OptionGroup var location: Location

        func run() throws {
            let pool = try location.open()
            var missing: [String] = []
            for key in keys where try pool.remove(key) == 0 { missing.append(key) }
            try pool.refreshIndex()
            guard missing.isEmpty else { throw ValidationError("not in the pool: \(missing.joined(separator: ", "))") }
        }
    }

    struct Search: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The LoRAs whose embeddings are closest (cosine) to a prompt's CLIP-L embedding.")

        @Argument(help: "The prompt.")
        var prompt: String?

        @Option(name: .long, help: "Search with this query embedding (a .safetensors with `embedding` [D], e.g. from `lora embed`) instead of a prompt.")
        var embedding: String?

        @Option(name: .shortAndLong, parsing: .unconditional, help: "How many to return.")
        var k = 5

        @Option(name: .long, help: "A FLUX pipeline folder whose CLIP (text_encoder/, tokenizer/) embeds the prompt.")
        var textEncoders: String?

        func validate() throws {
            guard (prompt == nil) != (embedding == nil) else { throw ValidationError("give a prompt or --embedding FILE, not both") }
            guard prompt == nil || textEncoders != nil else { throw ValidationError("a prompt needs --text-encoders PIPELINE (its CLIP embeds the prompt)") }
        }

        @Option(name: .long, help: "Only entries made by this weight encoder (default: all).")
        var encoder: String?

        @OptionGroup var location: Location
        @OptionGroup var backendOptions: BackendOptions

        @Flag(name: .long, help: "One JSON line per match.")
        var json = false

        func run() throws {
            let started = DispatchTime.now().uptimeNanoseconds
            // The pool opens (and its schema is checked) on the other core while the query is encoded.
            let pool = Pending { [location] in try location.open() }
            let query: [Float]
            if let embedding {
                query = try SafeTensorsFile(path: embedding).tensor(named: "embedding").floats()
            } else {
                // So does the backend (OpenBLAS loads in a few ms) while the tokenizer is read.
                let backend = Pending { [backendOptions] in try backendOptions.makeBackend() }
                let encoder = try RetrievalQueryEncoder.load(pipeline: textEncoders!)
                query = try encoder.embed(prompt!, on: try backend.value())
            }
            let version = try encoder.map { try LoRAWeightEncoder.load(path: $0).version }
            let queried = DispatchTime.now().uptimeNanoseconds
            let matches = try pool.value().search(query, k: max(1, k), encoderVersion: version)
            let timings = ["query_seconds": Double(queried - started) / 1e9,
                           "search_seconds": Double(DispatchTime.now().uptimeNanoseconds - queried) / 1e9]
            for (rank, match) in matches.enumerated() {
                let entry = match.entry
                if json {
                    print(try JSONOutput.line(["rank": rank + 1, "similarity": Double(match.similarity), "name": entry.name,
                                               "path": entry.path, "caption": entry.caption, "present": entry.isPresent]
                                                  .merging(timings) { $1 }))
                } else {
                    print(String(format: "%d. %.4f  %@  %@%@", rank + 1, match.similarity, entry.name, entry.isPresent ? "" : "[missing] ", entry.path))
                }
            }
        }
    }
}
