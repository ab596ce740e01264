import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification

/// `lorafuse inspect FILE`: the tensors and metadata of a safetensors file.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List every tensor (name, dtype, shape) and the metadata of a safetensors file."
    )

    @Argument(help: "A .safetensors file.")
    var file: String

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
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

/// Compact, key-sorted JSON lines for `--json` output.
enum JSONOutput {
    static func line(_ object: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
