"""Player QoE: the stream processor that turns the edges' CMCD events into windowed
figures per edge, channel, region and rung, and a health score per edge."""
