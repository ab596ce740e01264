import CZlib
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// 8-bit RGB PNG files: IHDR, `tEXt` chunks (prompt and settings), one zlib-compressed IDAT
/// (the system zlib; scanlines unfiltered), IEND. Written to a temporary name, then renamed.
public enum PNGWriter {
    /// Why a PNG could not be encoded, written or decoded.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// `pixels`: height × width × 3 bytes, row-major RGB.
    public static func encode(pixels: [UInt8], width: Int, height: Int, text: [(key: String, value: String)] = []) throws -> Data {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw Failure(description: "PNG: \(pixels.count) bytes for a \(width)×\(height) RGB image")
        }
        var raw = [UInt8]()
        raw.reserveCapacity(height * (width * 3 + 1))
        for row in 0..<height {
            raw.append(0)  // filter: none
            raw.append(contentsOf: pixels[(row * width * 3)..<((row + 1) * width * 3)])
        }
        var compressedSize = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
        let status = compress2(&compressed, &compressedSize, raw, uLong(raw.count), 6)
        guard status == Z_OK else { throw Failure(description: "PNG: zlib compress2 failed (\(status))") }
        var data = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.append(bigEndian: UInt32(width))
        header.append(bigEndian: UInt32(height))
        header.append(contentsOf: [8, 2, 0, 0, 0])  // 8 bits, RGB, deflate, adaptive filtering, no interlace
        chunk("IHDR", header, into: &data)
        for (key, value) in text {
            // tEXt is Latin-1: keep the key printable ASCII, and write non-Latin-1 text as iTXt.
            let keyword = String(key.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }.prefix(79).map(Character.init))
            if let latin1 = value.data(using: .isoLatin1) {
                chunk("tEXt", Data(keyword.utf8) + [0] + latin1, into: &data)
            } else {
                chunk("iTXt", Data(keyword.utf8) + [0, 0, 0, 0, 0] + Data(value.utf8), into: &data)
            }
        }
        chunk("IDAT", Data(compressed.prefix(Int(compressedSize))), into: &data)
        chunk("IEND", Data(), into: &data)
        return data
    }

    /// Writes the PNG atomically (`AtomicFile`); with a `transaction`, staged until it commits.
    public static func write(pixels: [UInt8], width: Int, height: Int, text: [(key: String, value: String)] = [], to path: String,
                             in transaction: AtomicFile.Transaction? = nil) throws {
        let data = try encode(pixels: pixels, width: width, height: height, text: text)
        if let failure = AtomicFile.write(path, in: transaction, fill: { file in data.withUnsafeBytes { file.write($0) } }) {
            throw Failure(description: "\(path): cannot write (\(failure))")
        }
    }

    /// Reads back a PNG this writer made (8-bit RGB, unfiltered scanlines): its size, pixels
    /// and text chunks. For tests and tools; not a general PNG decoder.
    public static func decode(_ data: Data) throws -> (width: Int, height: Int, pixels: [UInt8], text: [String: String]) {
        let bytes = [UInt8](data)
        guard bytes.count >= 8, bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw Failure(description: "not a PNG file")
        }
        func word(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        var position = 8, width = 0, height = 0
        var compressed: [UInt8] = []
        var text: [String: String] = [:]
        while position + 12 <= bytes.count {
            let length = word(position)
            let type = String(decoding: bytes[(position + 4)..<(position + 8)], as: UTF8.self)
            guard position + 12 + length <= bytes.count else { throw Failure(description: "truncated PNG chunk \(type)") }
            let body = Array(bytes[(position + 8)..<(position + 8 + length)])
            switch type {
            case "IHDR":
                guard body.count == 13, body[8] == 8, body[9] == 2 else { throw Failure(description: "not an 8-bit RGB PNG") }
                width = body[0..<4].reduce(0) { $0 << 8 | Int($1) }
                height = body[4..<8].reduce(0) { $0 << 8 | Int($1) }
            case "tEXt", "iTXt":
                if let zero = body.firstIndex(of: 0) {
                    let key = String(decoding: body[..<zero], as: UTF8.self)
                    let value = type == "tEXt" ? String(bytes: body[(zero + 1)...], encoding: .isoLatin1) ?? ""
                        : String(decoding: body[min(body.count, zero + 5)...], as: UTF8.self)
                    text[key] = value
                }
            case "IDAT": compressed += body
            default: break
            }
            position += 12 + length
        }
        let stride = width * 3 + 1
        var rawSize = uLong(stride * height)
        var raw = [UInt8](repeating: 0, count: Int(rawSize))
        guard width > 0, height > 0, uncompress(&raw, &rawSize, compressed, uLong(compressed.count)) == Z_OK, Int(rawSize) == raw.count else {
            throw Failure(description: "PNG image data does not inflate to \(width)×\(height) RGB")
        }
        var pixels: [UInt8] = []
        pixels.reserveCapacity(width * height * 3)
        for row in 0..<height {
            guard raw[row * stride] == 0 else { throw Failure(description: "PNG row \(row) uses a filter this reader does not undo") }
            pixels += raw[(row * stride + 1)..<((row + 1) * stride)]
        }
        return (width, height, pixels, text)
    }

    private static func chunk(_ type: String, _ body: Data, into data: inout Data) {
        data.append(bigEndian: UInt32(body.count))
        let typed = Data(type.utf8) + body
        data.append(typed)
        let crc = typed.withUnsafeBytes { crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt(typed.count)) }
        data.append(bigEndian: UInt32(crc))
    }
}

extension Data {
    mutating func append(bigEndian value: UInt32) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}
