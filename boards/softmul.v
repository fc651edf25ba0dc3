// lowbit: yosys techmap for narrow multipliers built from LUTs (the PE's weight x activation).
//
// Maps a $mul whose narrower operand has 2 to 8 bits to partial products summed by a balanced
// tree of $alu cells (carry chains: CCU2C on ECP5). Left alone, `alumacc` merges the product
// and the PE's accumulate into one $macc whose full-adder tree is as wide as the accumulator,
// which on ECP5 costs ~190 LUT4 for a 4x9 product. Wider multipliers are declined
// (_TECHMAP_FAIL_) and left to the standard flow.
//
// With n the narrow operand and w the wide one (extended to the product width), partial
// product k is n[k] ? w << k : 0. For signed operands n's top bit weighs -2^(NW-1): that term
// enters inverted, ~(n[k] ? w << k : 0), and the +1 completing its negation is the carry-in
// of the first adder.

(* techmap_celltype = "$mul" *)
module _lowbit_softmul (A, B, Y);
	parameter A_SIGNED = 0;
	parameter B_SIGNED = 0;
	parameter A_WIDTH = 1;
	parameter B_WIDTH = 1;
	parameter Y_WIDTH = 1;

	input [A_WIDTH-1:0] A;
	input [B_WIDTH-1:0] B;
	output [Y_WIDTH-1:0] Y;

	localparam SWAP = B_WIDTH > A_WIDTH;
	localparam NW = SWAP ? A_WIDTH : B_WIDTH;
	localparam WW = SWAP ? B_WIDTH : A_WIDTH;
	localparam SIGNED = (A_SIGNED != 0) && (B_SIGNED != 0);
	wire _TECHMAP_FAIL_ = NW > 8 || NW < 2 || (A_SIGNED != 0) != (B_SIGNED != 0);

	wire [NW-1:0] n = SWAP ? A : B;
	wire [WW-1:0] w = SWAP ? B : A;
	wire [Y_WIDTH-1:0] wx;
	generate
		if (Y_WIDTH <= WW) begin : trunc
			assign wx = w[Y_WIDTH-1:0];
		end else begin : ext
			assign wx = {{(Y_WIDTH-WW){SIGNED ? w[WW-1] : 1'b0}}, w};
		end
	endgenerate

	// A heap: leaves 8..15 are the partial products (8 + NW.. are empty), node i sums
	// nodes 2i and 2i+1; node 1 is the product.
	wire [16*Y_WIDTH-1:0] node;
	genvar i;
	generate
		for (i = 8; i < 16; i = i + 1) begin : leaf
			if (i - 8 < NW - 1 || (i - 8 == NW - 1 && !SIGNED)) begin : add_term
				assign node[(i)*Y_WIDTH +: Y_WIDTH] = n[i - 8] ? (wx << (i - 8)) : {Y_WIDTH{1'b0}};
			end else if (i - 8 == NW - 1) begin : sub_term
				assign node[(i)*Y_WIDTH +: Y_WIDTH] = ~(n[i - 8] ? (wx << (i - 8)) : {Y_WIDTH{1'b0}});
			end else begin : empty
				assign node[(i)*Y_WIDTH +: Y_WIDTH] = {Y_WIDTH{1'b0}};
			end
		end
		for (i = 1; i < 8; i = i + 1) begin : sum
			// First leaf of the right child 2i+1 (height of node i: 1 for i >= 4, 2 for
			// i >= 2, 3 for i = 1).
			localparam H = i >= 4 ? 1 : i >= 2 ? 2 : 3;
			localparam RIGHT_LEAF = ((2 * i + 1) << (H - 1)) - 8;
			if (RIGHT_LEAF >= NW) begin : pass
				assign node[(i)*Y_WIDTH +: Y_WIDTH] = node[(2 * i)*Y_WIDTH +: Y_WIDTH];
			end else begin : add
				wire [Y_WIDTH-1:0] x_unused, co_unused;
				\$alu #(
					.A_SIGNED(0), .B_SIGNED(0),
					.A_WIDTH(Y_WIDTH), .B_WIDTH(Y_WIDTH), .Y_WIDTH(Y_WIDTH)
				) alu (
					.A(node[(2 * i)*Y_WIDTH +: Y_WIDTH]), .B(node[(2 * i + 1)*Y_WIDTH +: Y_WIDTH]),
					.CI(i == 4 && SIGNED ? 1'b1 : 1'b0), .BI(1'b0),
					.X(x_unused), .Y(node[(i)*Y_WIDTH +: Y_WIDTH]), .CO(co_unused)
				);
			end
		end
	endgenerate
	assign node[Y_WIDTH-1:0] = {Y_WIDTH{1'b0}};   // unused slot 0
	assign Y = node[(1)*Y_WIDTH +: Y_WIDTH];
endmodule
