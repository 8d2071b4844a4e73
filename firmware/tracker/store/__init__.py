# The durable record queue on flash.
