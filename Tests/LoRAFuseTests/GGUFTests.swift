import Foundation
import Testing
import LoRAFuse

/// The GGUF reader and the dequantization of every type it reads, against files written by the
/// `gguf` Python package and dequantized by its `quants.dequantize` (Tools/reference/make_gguf_fixtures.py).
@Suite struct GGUFTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gguf")
    static let expected = try! SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path)

    @Test func everyTypeDequantizesBitForBit() throws {
        let file = try GGUFFile(path: Self.folder.appendingPathComponent("types.gguf").path)
        #expect(file.version == 3 && file.alignment == 32)
        #expect(Set(file.tensors.map(\.type)) == Set(GGMLType.allCases), "the fixture holds every type")
        for tensor in file.tensors {
            let reference = try Self.expected.tensor(named: tensor.name)
            #expect(tensor.shape == reference.shape, "\(tensor.name)")
            let values = file.dequantized(tensor)
            let mismatches = zip(values, reference.floats()).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(mismatches == 0 && values.count == reference.shape.elementCount, "\(tensor.name) (\(tensor.type)): \(mismatches) values differ")
            let finite = values.allSatisfy { $0.isFinite }
            #expect(finite)
        }
    }

    @Test func metadataOfEveryValueType() throws {
        let file = try GGUFFile(path: Self.folder.appendingPathComponent("types.gguf").path)
        #expect(file.value("general.architecture")?.string == "flux")
        #expect(file.value("test.u8") == .unsigned(200) && file.value("test.i8") == .signed(-100))
        #expect(file.value("test.u16") == .unsigned(60000) && file.value("test.i16") == .signed(-30000))
        #expect(file.value("test.u32") == .unsigned(4_000_000_000) && file.value("test.i32") == .signed(-2_000_000_000))
        #expect(file.value("test.u64") == .unsigned(1 << 63 + 5) && file.value("test.i64") == .signed(-(1 << 62)))
        #expect(file.value("test.f32") == .float(0.25) && file.value("test.f64") == .float(-1.5e300))
        #expect(file.value("test.bool") == .bool(true) && file.value("test.string") == .string("zorbo ✓"))
        #expect(file.value("test.strings") == .array([.string("a"), .string("bc"), .string("")]))
        #expect(file.value("test.nested") == .array([.array([.signed(1), .signed(2)]), .array([.signed(3)])]))
    }

    @Test func customAlignment() throws {
        let file = try GGUFFile(path: Self.folder.appendingPathComponent("aligned64.gguf").path)
        #expect(file.alignment == 64)
        for tensor in file.tensors {
            #expect(tensor.offset % 64 == 0)
            #expect(file.dequantized(tensor) == (try Self.expected.tensor(named: "aligned64.\(tensor.name)")).floats())
        }
    }

    // MARK: - Hostile files

    /// A GGUF file written field by field, so each test can break exactly one thing.
    struct Builder {
        var magic: UInt32 = 0x4655_4747
        var version: UInt32 = 3
        var tensorCount: UInt64?
        var keyCount: UInt64?
        var keys: [(key: String, type: UInt32, value: [UInt8])] = []
        var tensors: [(name: String, dims: [UInt64], type: UInt32, offset: UInt64)] = [("w", [32, 2], 8, 0)]
        var alignment = 32
        var data = [UInt8](repeating: 0, count: 68)

        static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        static func string(_ text: String) -> [UInt8] { le(UInt64(text.utf8.count)) + Array(text.utf8) }

        var bytes: [UInt8] {
            var out = Self.le(magic) + Self.le(version) + Self.le(tensorCount ?? UInt64(tensors.count)) + Self.le(keyCount ?? UInt64(keys.count))
            for key in keys { out += Self.string(key.key) + Self.le(key.type) + key.value }
            for tensor in tensors {
                out += Self.string(tensor.name) + Self.le(UInt32(tensor.dims.count))
                for extent in tensor.dims { out += Self.le(extent) }
                out += Self.le(tensor.type) + Self.le(tensor.offset)
            }
            while out.count % alignment != 0 { out.append(0) }
            return out + data
        }

        func write(_ name: String, in folder: URL) throws -> String {
            let path = folder.appendingPathComponent(name).path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
    }

    static func refusal(_ builder: Builder, _ label: String, in folder: URL) throws -> String? {
        let path = try builder.write(label + ".gguf", in: folder)
        do {
            _ = try GGUFFile(path: path)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func hostileHeadersGiveOneClearError() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(try Self.refusal(Builder(), "valid", in: folder) == nil, "the baseline file is valid")

        let cases: [(String, String, (inout Builder) -> Void)] = [
            ("magic", "no GGUF magic", { $0.magic = 0x4655_4746 }),
            ("version 1", "version 1", { $0.version = 1 }),
            ("version 4", "version 4", { $0.version = 4 }),
            ("tensor count", "more than", { $0.tensorCount = 1 << 60 }),
            ("key count", "more than", { $0.keyCount = 1 << 40 }),
            ("string length", "past the end", { $0.keys = [("s", 8, Builder.le(UInt64(1) << 50))] }),
            ("array count", "cannot fit", { $0.keys = [("a", 9, Builder.le(UInt32(4)) + Builder.le(UInt64(1) << 50))] }),
            ("array type", "unknown type", { $0.keys = [("a", 9, Builder.le(UInt32(99)) + Builder.le(UInt64(1)))] }),
            ("value type", "unknown value type", { $0.keys = [("a", 13, [])] }),
            ("bool", "not 0 or 1", { $0.keys = [("b", 7, [2])] }),
            ("utf8", "not valid UTF-8", { $0.keys = [("s", 8, Builder.le(UInt64(2)) + [0xC3, 0x28])] }),
            ("duplicate key", "appears twice", { $0.keys = [("a", 0, [1]), ("a", 0, [2])] }),
            ("nesting", "nested deeper", { $0.keys = [("n", 9, Builder.le(UInt32(9)) + Builder.le(UInt64(1)) + Builder.le(UInt32(9)) + Builder.le(UInt64(1))
                                                       + Builder.le(UInt32(9)) + Builder.le(UInt64(1)) + Builder.le(UInt32(9)) + Builder.le(UInt64(0)))] }),
            ("alignment", "power of two", { $0.keys = [("general.alignment", 4, Builder.le(UInt32(48)))] }),
            ("alignment zero", "power of two", { $0.keys = [("general.alignment", 4, Builder.le(UInt32(0)))] }),
            ("rank", "dimensions", { $0.tensors[0].dims = [32, 1, 1, 1, 2] }),
            ("rank zero", "dimensions", { $0.tensors[0].dims = [] }),
            ("extent", "extent", { $0.tensors[0].dims = [32, 1 << 40] }),
            ("elements", "too many elements", { $0.tensors[0].dims = [1 << 30, 1 << 30, 1 << 30, 1 << 30] }),
            ("type", "IQ2_XXS", { $0.tensors[0].type = 16 }),
            ("block", "whole Q8_0 blocks", { $0.tensors[0].dims = [33, 2] }),
            ("misaligned", "not a multiple", { $0.tensors[0].offset = 4 }),
            ("past the end", "past the end", { $0.tensors[0].offset = 1 << 40 }),
            ("short data", "past the end", { $0.data = Array($0.data.prefix(40)) }),
            ("duplicate tensor", "appears twice", { $0.tensors.append(("w", [32], 8, 64)); $0.data += [UInt8](repeating: 0, count: 34) }),
            ("overlap", "overlap", { $0.tensors.append(("v", [32], 8, 32)) }),
            ("long name", "longer than 64", { $0.tensors[0].name = String(repeating: "n", count: 65) }),
        ]
        for (label, reason, edit) in cases {
            var builder = Builder()
            edit(&builder)
            let refused = try Self.refusal(builder, label, in: folder)
            #expect(refused?.contains(reason) == true, "\(label): \(refused ?? "accepted")")
        }
        // Every prefix of a valid file is refused (the last tensor ends at the end of the file).
        let valid = Builder().bytes
        for length in 0..<valid.count {
            let path = folder.appendingPathComponent("prefix.gguf").path
            try Data(valid.prefix(length)).write(to: URL(fileURLWithPath: path))
            #expect(throws: GGUFError.self, "prefix of \(length) bytes") { _ = try GGUFFile(path: path) }
        }
    }

    /// Random corruption of a real header: every result is a file or one GGUFError, quickly.
    @Test func randomCorruptionNeverCrashes() throws {
        let source = try [UInt8](Data(contentsOf: Self.folder.appendingPathComponent("types.gguf")))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var random = SeededRandom(seed: 7)
        var refused = 0
        let path = folder.appendingPathComponent("corrupt.gguf").path
        for _ in 0..<400 {
            var bytes = source
            for _ in 0..<(1 + Int(random.next() % 4)) {
                bytes[Int(random.next() % 1312)] = UInt8(truncatingIfNeeded: random.next())
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let file = try GGUFFile(path: path)
                for tensor in file.tensors { _ = file.dequantized(tensor) }
            } catch {
                refused += 1
            }
        }
        #expect(refused > 0, "corruptions are caught: \(refused) of 400")
    }
}
