/// Where each intermediate tensor of a graph lives in one scratch buffer, reusing the bytes
/// of values whose last reader has run (liveness-based, first fit). Backends that run the
/// nodes in order with a dependency between consecutive kernels can bind these ranges.
///
/// Rules: inputs are written before any kernel, so they are placed first; a node's output
/// is placed while its operands are still live (no kernel writes over what it reads);
/// reshapes alias their source; parameters live elsewhere; outputs (or every node, when
/// `keepAll`) are never reused.
public struct MemoryPlan: Sendable {
    /// The node whose bytes a node uses: itself, or the source of a chain of reshapes.
    public let owner: [Int]
    /// Byte offset of every node that owns scratch storage (not parameters).
    public let offsets: [Int: Int]
    /// Size of the scratch buffer.
    public let totalBytes: Int

    /// Plans every value of `graph` into one buffer, offsets aligned to `alignment`; `keepAll` gives each value its own bytes.
    public init(graph: Graph, alignment: Int, keepAll: Bool = false) {
        let nodes = graph.nodes
        var owner = Array(nodes.indices)
        for node in nodes {
            if case .reshape = node.op { owner[node.id] = owner[node.inputs[0]] }
        }
        var lastUse = Array(nodes.indices)  // a value nobody reads dies right after it is made
        for node in nodes {
            for input in node.inputs { lastUse[owner[input]] = max(lastUse[owner[input]], node.id) }
        }
        for output in graph.outputs { lastUse[owner[output]] = Int.max }
        if keepAll { for index in nodes.indices { lastUse[index] = Int.max } }

        var free: [(offset: Int, size: Int)] = []
        var end = 0
        var offsets: [Int: Int] = [:]
        func size(_ id: Int) -> Int { max(alignment, (nodes[id].type.byteCount + alignment - 1) / alignment * alignment) }
        func place(_ id: Int) {
            let needed = size(id)
            if let index = free.firstIndex(where: { $0.size >= needed }) {
                offsets[id] = free[index].offset
                if free[index].size == needed { free.remove(at: index) } else {
                    free[index].offset += needed
                    free[index].size -= needed
                }
            } else if let last = free.last, last.offset + last.size == end {
                // Grow the trailing free block instead of leaving it stranded.
                offsets[id] = last.offset
                end = last.offset + needed
                free.removeLast()
            } else {
                offsets[id] = end
                end += needed
            }
        }
        func release(_ id: Int) {
            guard let offset = offsets[id] else { return }
            free.append((offset, size(id)))
            free.sort { $0.offset < $1.offset }
            var merged: [(offset: Int, size: Int)] = []
            for block in free {
                if let last = merged.last, last.offset + last.size == block.offset {
                    merged[merged.count - 1].size += block.size
                } else {
                    merged.append(block)
                }
            }
            free = merged
        }
        func ownsStorage(_ node: Node) -> Bool {
            switch node.op {
            case .parameter, .reshape: false
            default: true
            }
        }
        for node in nodes where node.op.kind == .input { place(node.id) }
        var dying: [Int: [Int]] = [:]
        for index in nodes.indices where lastUse[index] != Int.max && ownsStorage(nodes[index]) {
            dying[lastUse[index], default: []].append(index)
        }
        for node in nodes {
            if ownsStorage(node) && node.op.kind != .input { place(node.id) }
            for id in dying[node.id] ?? [] { release(id) }
        }
        self.owner = owner
        self.offsets = offsets
        self.totalBytes = end
    }

    /// The byte offset of `node`'s value (through reshapes), or nil for parameters.
    public func offset(of node: Int) -> Int? { offsets[owner[node]] }
}
