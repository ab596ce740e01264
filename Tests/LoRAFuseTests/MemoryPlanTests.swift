import Testing
@testable import LoRAFuse
@testable import LoRAFuseModels
@testable import LoRAFuseFusion
@testable import LoRAFuseRetrieval
@testable import LoRAFuseVerification
@testable import LoRAFuseToyWorld

@Suite struct MemoryPlanTests {
    /// A residual MLP stack: many intermediates, few alive at once.
    static func stack(layers: Int) throws -> Graph {
        var graph = Graph()
        var x = graph.input("x", [5, 33])
        for _ in 0..<layers {
            let hidden = try graph.gelu(graph.scale(x, 0.5))
            let reshaped = try graph.reshape(hidden, [33, 5])
            x = try graph.add(x, graph.reshape(graph.scale(reshaped, 2), [5, 33]))
        }
        graph.markOutput(x)
        return graph
    }

    /// Brute force: no two values whose lifetimes overlap may share bytes.
    static func checkNoLiveOverlap(_ graph: Graph, _ plan: MemoryPlan, alignment: Int) {
        let nodes = graph.nodes
        var lastUse = Array(nodes.indices)
        for node in nodes { for input in node.inputs { lastUse[plan.owner[input]] = max(lastUse[plan.owner[input]], node.id) } }
        for output in graph.outputs { lastUse[plan.owner[output]] = Int.max }
        let firstUse = nodes.map { $0.op.kind == .input ? -1 : $0.id }
        let owned = plan.offsets.keys.sorted()
        for a in owned {
            for b in owned where b > a {
                let liveTogether = firstUse[a] <= lastUse[b] && firstUse[b] <= lastUse[a]
                guard liveTogether else { continue }
                let aRange = plan.offsets[a]!..<(plan.offsets[a]! + max(alignment, nodes[a].type.byteCount))
                let bRange = plan.offsets[b]!..<(plan.offsets[b]! + max(alignment, nodes[b].type.byteCount))
                #expect(!aRange.overlaps(bRange), "%\(a) and %\(b) are live together but share bytes")
            }
        }
    }

    @Test func reusesMemoryWithoutOverlappingLiveValues() throws {
        let graph = try Self.stack(layers: 12)
        let plan = MemoryPlan(graph: graph, alignment: 256)
        let sum = graph.nodes.reduce(0) { $0 + max(256, ($1.type.byteCount + 255) / 256 * 256) }
        #expect(plan.totalBytes * 4 < sum, "peak \(plan.totalBytes) should be far below the sum \(sum)")
        Self.checkNoLiveOverlap(graph, plan, alignment: 256)
        // Reshapes share their source's bytes.
        for node in graph.nodes { if case .reshape = node.op { #expect(plan.offset(of: node.id) == plan.offset(of: node.inputs[0])) } }
    }

    @Test func keepAllNeverReuses() throws {
        let graph = try Self.stack(layers: 3)
        let plan = MemoryPlan(graph: graph, alignment: 64, keepAll: true)
        let owned = plan.offsets.keys.map { plan.offsets[$0]! }
        #expect(Set(owned).count == owned.count)
    }
}
