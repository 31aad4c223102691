"""What Rasa's own files name: the tracker store and lock store (endpoints.yml) and the relay's
input channel (credentials.yml). Each is a documented Rasa extension point; the patches to Rasa's
internals are in bot/rasa_patches/."""
