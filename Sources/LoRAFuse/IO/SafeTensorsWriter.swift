#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Writes safetensors files. The file appears complete or not at all: data goes to a
/// temporary file in the same folder, which is flushed and then renamed over `path`.
public enum SafeTensorsWriter {
    /// Writes `tensors` in the given order (names must be unique) with `metadata`.
    public static func write(_ tensors: [(name: String, tensor: HostTensor)], metadata: [String: String] = [:],
                             to path: String) throws(SafeTensorsError) {
        var seen = Set<String>()
        var header = "{"
        var pieces: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonQuoted($0)):\(jsonQuoted(metadata[$0]!))" }
            pieces.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for (name, tensor) in tensors {
            guard name != "__metadata__" else {
                throw SafeTensorsError(path: path, tensor: name, .writeFailed("the name is reserved for metadata"))
            }
            guard seen.insert(name).inserted else { throw SafeTensorsError(path: path, tensor: name, .duplicateName) }
            let shape = tensor.shape.dimensions.map(String.init).joined(separator: ",")
            pieces.append("\(jsonQuoted(name)):{\"dtype\":\"\(tensor.dtype.name)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.byteCount)]}")
            offset += tensor.byteCount
        }
        header += pieces.joined(separator: ",") + "}"
        // Pad the header with spaces so the data section starts 8-byte aligned, as the
        // reference writer does; readers that map the file can then use aligned loads.
        var headerBytes = Array(header.utf8)
        while (headerBytes.count + 8) % 8 != 0 { headerBytes.append(0x20) }

        let temporaryPath = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SafeTensorsError(path: path, .writeFailed(MappedFile.errnoText()))
        }
        var committed = false
        defer {
            if !committed { unlink(temporaryPath) }
        }
        var prefix = withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) }
        prefix += headerBytes
        var failure = prefix.withUnsafeBytes { writeAll(descriptor, $0) }
        for (_, tensor) in tensors where failure == nil {
            failure = tensor.withUnsafeBytes { writeAll(descriptor, $0) }
        }
        if failure == nil, fsync(descriptor) != 0 { failure = MappedFile.errnoText() }
        close(descriptor)
        if let failure { throw SafeTensorsError(path: path, .writeFailed(failure)) }
        guard rename(temporaryPath, path) == 0 else {
            throw SafeTensorsError(path: path, .writeFailed("rename failed: \(MappedFile.errnoText())"))
        }
        committed = true
    }

    /// Convenience: tensors sorted by name.
    public static func write(_ tensors: [String: HostTensor], metadata: [String: String] = [:],
                             to path: String) throws(SafeTensorsError) {
        try write(tensors.keys.sorted().map { ($0, tensors[$0]!) }, metadata: metadata, to: path)
    }

    /// Writes every byte, retrying short writes; returns the error text on failure.
    private static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> String? {
        guard var pointer = bytes.baseAddress else { return nil }
        var remaining = bytes.count
        while remaining > 0 {
            let written = systemWrite(descriptor, pointer, min(remaining, 1 << 30))
            if written < 0 {
                if errno == EINTR { continue }
                return MappedFile.errnoText()
            }
            pointer += written
            remaining -= written
        }
        return nil
    }
}
