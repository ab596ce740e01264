import Foundation
import Testing
@testable import LoRAFuse
@testable import LoRAFuseModels
@testable import LoRAFuseFusion
@testable import LoRAFuseRetrieval
@testable import LoRAFusePipeline
@testable import LoRAFuseVerification
@testable import LoRAFuseToyWorld

@Suite struct SafeTensorsTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    @Test(arguments: DType.allCases.filter { !$0.isBlockQuantized })
    func roundTripsEveryDType(_ dtype: DType) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("round.safetensors")
        var random = SeededRandom(seed: 3)
        let range: ClosedRange<Double> = dtype.isFloatingPoint ? -100...100 : (dtype == .bool ? 0...1.9 : 0...120)
        let tensor = random.tensor([3, 5, 2], dtype: dtype, in: range)
        let scalar = random.tensor([], dtype: dtype, in: range)
        let empty = HostTensor(shape: [0, 4], dtype: dtype) { _ in }
        try SafeTensorsWriter.write([("weights.a", tensor), ("scalar", scalar), ("empty", empty)],
                                    metadata: ["format": "pt", "note": "ünïcode \"quoted\""], to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.names == ["weights.a", "scalar", "empty"])
        #expect(file.metadata == ["format": "pt", "note": "ünïcode \"quoted\""])
        let read = try file.tensor(named: "weights.a")
        #expect(read.type == tensor.type)
        #expect(Array(read.rawBytes) == Array(tensor.rawBytes))
        #expect(try file.tensor(named: "scalar").shape == [])
        #expect(try file.tensor(named: "empty").elementCount == 0)
        #expect(directory.contents == ["round.safetensors"], "no temporary file left behind")
        // Data section is 8-byte aligned, as the reference writer makes it.
        let headerLength = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect((headerLength + 8) % 8 == 0)
    }

    @Test func tensorsAreViewsIntoTheMapping() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("view.safetensors")
        try SafeTensorsWriter.write(["x": HostTensor(shape: [4], floats: [1, 2, 3, 4])], to: path)
        let file = try SafeTensorsFile(path: path)
        let first = try file.tensor(named: "x"), second = try file.tensor(named: "x")
        #expect(first.storage.baseAddress == second.storage.baseAddress, "both views share the mapped bytes")
        #expect(first.floats() == [1, 2, 3, 4])
    }

    @Test func failedWriteLeavesNothing() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("missing-folder/out.safetensors")
        #expect(throws: SafeTensorsError.self) {
            try SafeTensorsWriter.write(["x": HostTensor(shape: [1], floats: [1])], to: path)
        }
        let duplicate = directory.file("dup.safetensors")
        let tensor = HostTensor(shape: [1], floats: [1])
        #expect(throws: SafeTensorsError(path: duplicate, tensor: "x", .duplicateName)) {
            try SafeTensorsWriter.write([("x", tensor), ("x", tensor)], to: duplicate)
        }
        #expect(directory.contents.isEmpty)
    }

    @Test func overwriteIsAtomic() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("out.safetensors")
        try SafeTensorsWriter.write(["x": HostTensor(shape: [1], floats: [1])], to: path)
        let old = try SafeTensorsFile(path: path)  // a reader holding the old file keeps its data
        try SafeTensorsWriter.write(["y": HostTensor(shape: [2], floats: [5, 6])], to: path)
        #expect(try old.tensor(named: "x").floats() == [1])
        #expect(try SafeTensorsFile(path: path).tensor(named: "y").floats() == [5, 6])
    }

    /// Reads the file the Python reference (safetensors + torch) wrote and checks every
    /// name, dtype, shape and value it recorded beside it.
    @Test func readsFilesWrittenByTorch() throws {
        let folder = Self.fixtures.appendingPathComponent("safetensors")
        let file = try SafeTensorsFile(path: folder.appendingPathComponent("torch_written.safetensors").path)
        let expectation = try JSONSerialization.jsonObject(
            with: Data(contentsOf: folder.appendingPathComponent("torch_written.json"))) as! [String: Any]
        let tensors = expectation["tensors"] as! [[String: Any]]
        #expect(Set(file.names) == Set(tensors.map { $0["name"] as! String }))
        #expect(file.metadata == expectation["metadata"] as! [String: String])
        for description in tensors {
            let name = description["name"] as! String
            let tensor = try file.tensor(named: name)
            #expect(tensor.dtype.name == description["dtype"] as! String, "\(name)")
            #expect(tensor.shape.dimensions == description["shape"] as! [Int], "\(name)")
            // Values are written as exact hex floats ("0x1.8p+1"), "nan", "inf" or "-inf".
            let expected = (description["values"] as! [String]).map { Double($0)! }
            let actual = tensor.doubles()
            #expect(actual.count == expected.count)
            for (a, e) in zip(actual, expected) {
                #expect(a == e || (a.isNaN && e.isNaN), "\(name): \(a) vs \(e)")
            }
        }
    }
}

/// Hostile and broken files: each must give its own error, quickly, without crashing.
@Suite struct MalformedSafeTensorsTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let header: String
        var dataSize = 16
        var declaredLength: UInt64? = nil
        let expected: String  // prefix of the error kind's description
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "header length past EOF", header: "{}", declaredLength: 1_000, expected: "headerLengthOutOfRange"),
        Case(name: "header length huge", header: "{}", declaredLength: UInt64.max, expected: "headerLengthOutOfRange"),
        Case(name: "bad JSON", header: "{\"a\": {", expected: "invalidJSON"),
        Case(name: "not UTF-8", header: "{\"\u{FFFD}\":1}", expected: "invalidJSON"),
        Case(name: "deep nesting", header: String(repeating: "[", count: 5000), expected: "invalidJSON"),
        Case(name: "header is an array", header: "[]", expected: "invalidHeader"),
        Case(name: "entry not an object", header: #"{"t": 5}"#, expected: "invalidHeader"),
        Case(name: "missing dtype", header: #"{"t": {"shape": [1], "data_offsets": [0, 4]}}"#, expected: "invalidHeader"),
        Case(name: "missing offsets", header: #"{"t": {"dtype": "F32", "shape": [1]}}"#, expected: "invalidHeader"),
        Case(name: "unknown dtype", header: #"{"t": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}"#, expected: "unknownDType"),
        Case(name: "GGUF block dtype", header: #"{"t": {"dtype": "Q8_0", "shape": [32], "data_offsets": [0, 34]}}"#, expected: "unknownDType"),
        Case(name: "dtype not a string", header: #"{"t": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}}"#, expected: "invalidHeader"),
        Case(name: "negative dimension", header: #"{"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "fractional dimension", header: #"{"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "string dimension", header: #"{"t": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "shape not an array", header: #"{"t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "dimension beyond Int", header: #"{"t": {"dtype": "F32", "shape": [18446744073709551616], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "element count overflows", header: #"{"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "byte count overflows", header: #"{"t": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 4]}}"#, expected: "invalidShape"),
        Case(name: "shape and size disagree", header: #"{"t": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}"#, expected: "sizeMismatch"),
        Case(name: "offsets past data", header: #"{"t": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}"#, expected: "offsetsOutOfRange"),
        Case(name: "offsets reversed", header: #"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#, expected: "invalidHeader"),
        Case(name: "offsets huge", header: #"{"t": {"dtype": "U8", "shape": [1], "data_offsets": [9223372036854775806, 9223372036854775807]}}"#, expected: "offsetsOutOfRange"),
        Case(name: "offsets wrong arity", header: #"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#, expected: "invalidHeader"),
        Case(name: "overlapping tensors",
             header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
             expected: "overlapping"),
        Case(name: "duplicate names",
             header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
             expected: "invalidJSON"),
        Case(name: "metadata not strings", header: #"{"__metadata__": {"k": 1}}"#, expected: "invalidHeader"),
        Case(name: "metadata not an object", header: #"{"__metadata__": "x"}"#, expected: "invalidHeader"),
    ]

    @Test(arguments: cases)
    func rejects(_ testCase: Case) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("bad.safetensors")
        var bytes = [UInt8]()
        let header = testCase.name == "not UTF-8" ? [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D] : Array(testCase.header.utf8)
        withUnsafeBytes(of: (testCase.declaredLength ?? UInt64(header.count)).littleEndian) { bytes += $0 }
        bytes += header
        bytes += [UInt8](repeating: 0, count: testCase.dataSize)
        try #require(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        do {
            _ = try SafeTensorsFile(path: path)
            Issue.record("\(testCase.name): accepted")
        } catch {
            #expect(String(describing: error.kind).hasPrefix(testCase.expected), "\(testCase.name): \(error)")
            #expect(error.description.hasPrefix(path), "the message names the file")
            #expect(!error.description.contains("\n"), "one line")
        }
    }

    @Test func rejectsTinyAndMissingFiles() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("tiny.safetensors")
        try #require(FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3])))
        #expect(throws: SafeTensorsError(path: path, .fileTooSmall(size: 3))) { try SafeTensorsFile(path: path) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: directory.file("absent.safetensors")) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: directory.path) }
    }

    @Test func rejectsHeaderOverTheLimitWithoutReadingIt() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("sparse.safetensors")
        // A sparse file larger than the limit, declaring a header of limit + 1 bytes.
        try #require(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        var length = UInt64(SafeTensorsFile.maximumHeaderLength + 1).littleEndian
        try handle.write(contentsOf: Data(bytes: &length, count: 8))
        try handle.truncate(atOffset: UInt64(SafeTensorsFile.maximumHeaderLength + 64))
        try handle.close()
        #expect(throws: SafeTensorsError(path: path, .headerTooLarge(declared: UInt64(SafeTensorsFile.maximumHeaderLength + 1),
                                                                     limit: SafeTensorsFile.maximumHeaderLength))) {
            try SafeTensorsFile(path: path)
        }
    }

    /// Random corruptions of a valid file: every one must either open or throw, never crash.
    @Test func survivesRandomCorruption() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("valid.safetensors")
        var random = SeededRandom(seed: 11)
        try SafeTensorsWriter.write(["a": random.tensor([3, 4]), "b": random.tensor([5], dtype: .bfloat16)],
                                    metadata: ["k": "v"], to: path)
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let corrupt = directory.file("corrupt.safetensors")
        for trial in 0..<400 {
            var bytes = original
            switch trial % 3 {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
            case 1:
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<min(bytes.count, 160), using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            default:
                let position = Int.random(in: 8..<min(bytes.count, 160), using: &random)
                bytes[position] = [0x30, 0x39, 0x2C, 0x7D, 0x22, 0x5B][Int.random(in: 0..<6, using: &random)]
            }
            try #require(FileManager.default.createFile(atPath: corrupt, contents: Data(bytes)))
            if let file = try? SafeTensorsFile(path: corrupt) {
                for entry in file.entries { _ = file.tensor(entry).doubles() }  // every accepted range is readable
            }
        }
    }
}
