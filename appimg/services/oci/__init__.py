"""Distribution through OCI registries (spec/distribution.md).

An image file travels as the single layer of an OCI artifact (:mod:`.artifact`),
pushed and fetched with the plain distribution HTTP API (:mod:`.client`), with the
user's registry credentials (:mod:`.auth`); :mod:`.reference` parses the
``oci://HOST[:PORT]/REPO[:TAG][@DIGEST]`` references the command line takes.
:mod:`.chunks` cuts an image into content-defined chunks and defines the chunk
index :mod:`.publish` puts beside it; :mod:`.delta` assembles an update from the
installed image and byte ranges of the new one (§7).
Nothing here touches the store: :mod:`appimg.services.store.ops` installs the
downloaded, digest-checked file like any other.
"""
