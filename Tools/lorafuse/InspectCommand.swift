import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification

/// `lorafuse inspect FILE`: the tensors and metadata of a safetensors or GGUF file.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List every tensor (name, dtype, shape) and the metadata of a safetensors or GGUF file."
    )

    @Argument(help: "A .safetensors or .gguf file (GGUF is recognised by its magic, whatever the name).")
    var file: String

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        if Self.isGGUF(file) { return try inspectGGUF() }
        let contents = try SafeTensorsFile(path: file)
        if json {
            let tensors: [[String: Any]] = contents.entries.map { entry in
                ["name": entry.name, "dtype": entry.dtype.name, "shape": entry.shape.dimensions,
                 "data_offsets": [entry.dataRange.lowerBound, entry.dataRange.upperBound]]
            }
            print(try JSONOutput.line(["file": file, "tensors": tensors, "metadata": contents.metadata]))
            return
        }
        let nameWidth = min(96, contents.entries.map(\.name.count).max() ?? 4)
        let totalBytes = contents.entries.reduce(0) { $0 + $1.dataRange.count }
        let parameters = contents.entries.reduce(0) { $0 + $1.shape.elementCount }
        print("\(file): \(contents.entries.count) tensors, \(parameters) elements, \(ByteCountFormatter.string(fromByteCount: Int64(totalBytes), countStyle: .binary))")
        for entry in contents.entries {
            let name = entry.name.padding(toLength: max(nameWidth, entry.name.count), withPad: " ", startingAt: 0)
            print("  \(name)  \(entry.dtype.name.padding(toLength: 7, withPad: " ", startingAt: 0)) \(entry.shape)")
        }
        if !contents.metadataKeys.isEmpty {
            print("metadata:")
            for key in contents.metadataKeys {
                let value = contents.metadata[key]!
                print("  \(key): \(value.count > 200 ? String(value.prefix(200)) + "… (\(value.count) chars)" : value)")
            }
        }
    }
}

extension InspectCommand {
    /// Whether `path` starts with GGUF's magic (an unreadable file is left to the safetensors reader's error).
    static func isGGUF(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    static func text(_ value: GGUFValue) -> String {
        switch value {
        case let .unsigned(number): String(number)
        case let .signed(number): String(number)
        case let .float(number): String(number)
        case let .bool(flag): String(flag)
        case let .string(string): jsonQuoted(string.count > 200 ? String(string.prefix(200)) + "…" : string)
        case let .array(values): "[" + values.prefix(16).map(text).joined(separator: ", ") + (values.count > 16 ? ", … (\(values.count) values)]" : "]")
        }
    }

    func inspectGGUF() throws {
        let contents = try GGUFFile(path: file)
        if json {
            let tensors: [[String: Any]] = contents.tensors.map { tensor in
                ["name": tensor.name, "dtype": tensor.type.description, "shape": tensor.shape.dimensions,
                 "data_offsets": [tensor.offset, tensor.offset + tensor.byteCount]]
            }
            let metadata = Dictionary(contents.metadata.map { ($0.key, Self.text($0.value)) }, uniquingKeysWith: { first, _ in first })
            print(try JSONOutput.line(["file": file, "format": "gguf", "version": Int(contents.version), "tensors": tensors, "metadata": metadata]))
            return
        }
        let nameWidth = min(96, contents.tensors.map(\.name.count).max() ?? 4)
        let totalBytes = contents.tensors.reduce(0) { $0 + $1.byteCount }
        let parameters = contents.tensors.reduce(0) { $0 + $1.shape.elementCount }
        print("\(file): GGUF \(contents.version), \(contents.tensors.count) tensors, \(parameters) elements, "
              + "\(ByteCountFormatter.string(fromByteCount: Int64(totalBytes), countStyle: .binary))")
        for tensor in contents.tensors {
            let name = tensor.name.padding(toLength: max(nameWidth, tensor.name.count), withPad: " ", startingAt: 0)
            print("  \(name)  \(tensor.type.description.padding(toLength: 7, withPad: " ", startingAt: 0)) \(tensor.shape)")
        }
        if !contents.metadata.isEmpty {
            print("metadata:")
            for (key, value) in contents.metadata { print("  \(key): \(Self.text(value))") }
        }
    }
}

/// Compact, key-sorted JSON lines for `--json` output.
enum JSONOutput {
    static func line(_ object: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
