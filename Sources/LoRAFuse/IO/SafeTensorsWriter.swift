/// Writes safetensors files. The file appears complete or not at all (`AtomicFile`).
public enum SafeTensorsWriter {
    /// Writes `tensors` in the given order (names must be unique) with `metadata`. With a
    /// `transaction`, the file is only staged: it lands when the transaction commits.
    public static func write(_ tensors: [(name: String, tensor: HostTensor)], metadata: [String: String] = [:],
                             to path: String, in transaction: AtomicFile.Transaction? = nil) throws(SafeTensorsError) {
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
            guard !tensor.dtype.isBlockQuantized else {
                throw SafeTensorsError(path: path, tensor: name, .writeFailed("\(tensor.dtype.name) is a GGUF block type; safetensors has no such dtype"))
            }
            let shape = tensor.shape.dimensions.map(String.init).joined(separator: ",")
            pieces.append("\(jsonQuoted(name)):{\"dtype\":\"\(tensor.dtype.name)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.byteCount)]}")
            offset += tensor.byteCount
        }
        header += pieces.joined(separator: ",") + "}"
        // Pad the header with spaces so the data section starts 8-byte aligned, as the
        // reference writer does; readers that map the file can then use aligned loads.
        var headerBytes = Array(header.utf8)
        while (headerBytes.count + 8) % 8 != 0 { headerBytes.append(0x20) }

        var prefix = withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) }
        prefix += headerBytes
        let failure = AtomicFile.write(path, in: transaction) { file in
            var failure = file.write(prefix)
            for (_, tensor) in tensors where failure == nil {
                failure = tensor.withUnsafeBytes { file.write($0) }
            }
            return failure
        }
        if let failure { throw SafeTensorsError(path: path, .writeFailed(failure)) }
    }

    /// Convenience: tensors sorted by name.
    public static func write(_ tensors: [String: HostTensor], metadata: [String: String] = [:],
                             to path: String) throws(SafeTensorsError) {
        try write(tensors.keys.sorted().map { ($0, tensors[$0]!) }, metadata: metadata, to: path)
    }
}
